/*
 * buffer.m: device buffers in shared storage over page-aligned memory that this file maps, so
 * the pointer JS views with toArrayBuffer is the memory the GPU reads and writes; copies in and
 * out through that pointer; and buffers over memory the caller owns.
 */
#import "internal.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

@implementation SmeltBuffer
@end

/* The handle of a new MTLBuffer, counted and registered. */
static smelt_buffer* handle_of(SmeltDevice* dev, id<MTLBuffer> mtl, uint64_t length, uint64_t mapped) {
  SmeltBuffer* buf = [SmeltBuffer new];
  buf->device = dev;
  buf->mtl = mtl;
  buf->contents = mtl.contents;
  buf->length = length;
  buf->mapped_bytes = mapped;
  smelt_count_add(&dev->core->n_buffers, 1);
  smelt_count_add(&dev->core->n_buffer_bytes, length);
  smelt_buffer* out = (__bridge_retained smelt_buffer*)buf;
  smelt_device_register(dev, out);
  return out;
}

SMELT_API smelt_buffer* smelt_buffer_new(smelt_device* handle, uint64_t length, char* err, size_t errlen) {
  @autoreleasepool {
    if (handle == NULL) {
      smelt_err(err, errlen, "smelt_buffer_new: no device");
      return NULL;
    }
    SmeltDevice* dev = (__bridge SmeltDevice*)(void*)handle;
    if (smelt_device_lost(dev, err, errlen)) return NULL;
    uint64_t max_length = (uint64_t)dev->mtl.maxBufferLength;
    uint64_t page = (uint64_t)getpagesize();
    /* newBufferWithBytesNoCopy wants a page-aligned pointer and a length in whole pages; an
     * empty buffer still gets one page so that it has an address Metal accepts. */
    if (length > max_length || length > UINT64_MAX - page) {
      smelt_err(err, errlen, "buffer of %llu bytes is larger than this device's maxBufferLength (%llu bytes)",
                (unsigned long long)length, (unsigned long long)max_length);
      return NULL;
    }
    uint64_t mapped = length == 0 ? page : (length + page - 1) / page * page;
    if (mapped > max_length) {
      smelt_err(err, errlen,
                "buffer of %llu bytes needs %llu bytes in whole pages, more than this device's maxBufferLength "
                "(%llu bytes)",
                (unsigned long long)length, (unsigned long long)mapped, (unsigned long long)max_length);
      return NULL;
    }

    /* Anonymous mappings are page-aligned and zero-filled by the kernel. */
    void* memory = mmap(NULL, (size_t)mapped, PROT_READ | PROT_WRITE, MAP_ANON | MAP_PRIVATE, -1, 0);
    if (memory == MAP_FAILED) {
      smelt_err(err, errlen, "buffer of %llu bytes: mmap failed: %s", (unsigned long long)length, strerror(errno));
      return NULL;
    }
    /* The deallocator runs when the MTLBuffer is released for the last time, which may be on
     * a Metal thread after a command buffer that used it completes; munmap is safe anywhere. */
    id<MTLBuffer> mtl = [dev->mtl newBufferWithBytesNoCopy:memory
                                                    length:(NSUInteger)mapped
                                                   options:MTLResourceStorageModeShared |
                                                           MTLResourceHazardTrackingModeUntracked |
                                                           MTLResourceCPUCacheModeDefaultCache
                                               deallocator:^(void* pointer, NSUInteger bytes) {
                                                 munmap(pointer, bytes);
                                               }];
    if (mtl == nil) {
      munmap(memory, (size_t)mapped);
      smelt_err(err, errlen, "buffer of %llu bytes: Metal could not wrap the memory (newBufferWithBytesNoCopy)",
                (unsigned long long)length);
      return NULL;
    }

    return handle_of(dev, mtl, length, mapped);
  }
}

SMELT_API smelt_buffer* smelt_buffer_wrap(smelt_device* handle, void* memory, uint64_t length, char* err,
                                          size_t errlen) {
  @autoreleasepool {
    if (handle == NULL) {
      smelt_err(err, errlen, "smelt_buffer_wrap: no device");
      return NULL;
    }
    SmeltDevice* dev = (__bridge SmeltDevice*)(void*)handle;
    if (smelt_device_lost(dev, err, errlen)) return NULL;
    if (memory == NULL || length == 0) {
      smelt_err(err, errlen, "smelt_buffer_wrap: memory is NULL or length is 0");
      return NULL;
    }
    uint64_t page = (uint64_t)getpagesize();
    uint64_t max_length = (uint64_t)dev->mtl.maxBufferLength;
    if (length > max_length || length > UINT64_MAX - page) {
      smelt_err(err, errlen, "smelt_buffer_wrap: %llu bytes is larger than this device's maxBufferLength (%llu bytes)",
                (unsigned long long)length, (unsigned long long)max_length);
      return NULL;
    }
    MTLResourceOptions options =
        MTLResourceStorageModeShared | MTLResourceHazardTrackingModeUntracked | MTLResourceCPUCacheModeDefaultCache;
    id<MTLBuffer> mtl = nil;
    uint64_t mapped = length;
    if ((uintptr_t)memory % page == 0) {
      /* Metal wants whole pages; the rest of the last page is mapped with it, whoever owns it.
       * No deallocator: the caller owns the memory (smelt.h). */
      mapped = (length + page - 1) / page * page;
      if (mapped <= max_length)
        mtl = [dev->mtl newBufferWithBytesNoCopy:memory length:(NSUInteger)mapped options:options deallocator:nil];
    }
    if (mtl == nil) {
      mapped = length;
      mtl = [dev->mtl newBufferWithBytes:memory length:(NSUInteger)length options:options];
    }
    if (mtl == nil) {
      smelt_err(err, errlen, "smelt_buffer_wrap: Metal could not make a buffer of %llu bytes",
                (unsigned long long)length);
      return NULL;
    }
    return handle_of(dev, mtl, length, mapped);
  }
}

/* Bounds of a copy in or out; returns 0, or -1 with the reason. */
static int copy_range(const char* call, SmeltBuffer* buf, uint64_t offset, const void* host, uint64_t length,
                      char* err, size_t errlen) {
  if (smelt_device_lost(buf->device, err, errlen)) return -1;
  if (offset > buf->length || length > buf->length - offset) {
    smelt_err(err, errlen, "%s: bytes %llu..%llu are outside the buffer's %llu bytes", call,
              (unsigned long long)offset, (unsigned long long)(offset + length), (unsigned long long)buf->length);
    return -1;
  }
  if (host == NULL && length > 0) {
    smelt_err(err, errlen, "%s: the host pointer is NULL", call);
    return -1;
  }
  return 0;
}

SMELT_API int smelt_buffer_write(smelt_buffer* handle, uint64_t offset, const void* src, uint64_t length, char* err,
                                 size_t errlen) {
  @autoreleasepool {
    if (handle == NULL) return SMELT_ERROR;
    SmeltBuffer* buf = (__bridge SmeltBuffer*)(void*)handle;
    if (copy_range("smelt_buffer_write", buf, offset, src, length, err, errlen) != 0) return SMELT_ERROR;
    /* Shared storage: the CPU writes the memory the GPU reads. */
    if (length > 0) memcpy((char*)buf->contents + offset, src, (size_t)length);
    return SMELT_OK;
  }
}

SMELT_API int smelt_buffer_read(smelt_buffer* handle, uint64_t offset, void* dst, uint64_t length, char* err,
                                size_t errlen) {
  @autoreleasepool {
    if (handle == NULL) return SMELT_ERROR;
    SmeltBuffer* buf = (__bridge SmeltBuffer*)(void*)handle;
    if (copy_range("smelt_buffer_read", buf, offset, dst, length, err, errlen) != 0) return SMELT_ERROR;
    if (length > 0) memcpy(dst, (const char*)buf->contents + offset, (size_t)length);
    return SMELT_OK;
  }
}

SMELT_API void* smelt_buffer_contents(smelt_buffer* handle) {
  @autoreleasepool {
    if (handle == NULL) return NULL;
    return ((__bridge SmeltBuffer*)(void*)handle)->contents;
  }
}

SMELT_API uint64_t smelt_buffer_length(smelt_buffer* handle) {
  @autoreleasepool {
    if (handle == NULL) return 0;
    return ((__bridge SmeltBuffer*)(void*)handle)->length;
  }
}

SMELT_API void smelt_buffer_free(smelt_buffer* handle) {
  @autoreleasepool {
    if (handle == NULL) return;
    SmeltBuffer* buf = (__bridge_transfer SmeltBuffer*)(void*)handle;
    SmeltDevice* dev = buf->device;
    smelt_device_unregister(dev, handle);
    smelt_count_sub(&dev->core->n_buffers, 1);
    smelt_count_sub(&dev->core->n_buffer_bytes, buf->length);
    /* Releasing buf releases the MTLBuffer and unmaps its memory. Command buffers do not retain
     * it (command.m): JS frees a buffer only once every command buffer that encoded it finished,
     * except on a lost device, where a runaway part may still use it and the device keeps it. */
    [dev->core keepIfLost:buf->mtl];
  }
}

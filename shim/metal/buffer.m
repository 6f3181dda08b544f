/*
 * buffer.m: device buffers in shared storage over page-aligned memory that this file maps, so
 * the pointer JS views with toArrayBuffer is the memory the GPU reads and writes, small ones as
 * slots of shared slabs; copies in and out through that pointer; and buffers over memory the
 * caller owns, which are never slots.
 */
#import "internal.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

@implementation SmeltBuffer
@end

/* The handle of a new buffer, counted and registered: the bytes from offset in mtl, which is
 * the buffer's own or, with slot, its slab's. */
static smelt_buffer* handle_of(SmeltDevice* dev, id<MTLBuffer> mtl, const smelt_slot* slot, uint64_t length,
                               uint64_t mapped) {
  SmeltBuffer* buf = [SmeltBuffer new];
  buf->device = dev;
  buf->mtl = mtl;
  if (slot != NULL) {
    buf->slot = *slot;
    buf->offset = slot->offset;
  }
  buf->contents = (uint8_t*)mtl.contents + buf->offset;
  buf->length = length;
  buf->mapped_bytes = mapped;
  smelt_count_add(&dev->core->n_buffers, 1);
  smelt_count_add(&dev->core->n_buffer_bytes, length);
  smelt_buffer* out = (__bridge_retained smelt_buffer*)buf;
  smelt_device_register(dev, out);
  return out;
}

/* An MTLBuffer over `bytes` (whole pages) of memory mapped here, which is page-aligned and
 * zero-filled by the kernel, as newBufferWithBytesNoCopy wants and the ABI promises. The
 * deallocator unmaps it when the MTLBuffer is released for the last time, which may be on a
 * Metal thread after a command buffer that used it completes; munmap is safe anywhere. nil when
 * either step fails, with errno's text in *why for mmap. */
static id<MTLBuffer> map_pages(SmeltDevice* dev, uint64_t bytes, const char** why) {
  void* memory = mmap(NULL, (size_t)bytes, PROT_READ | PROT_WRITE, MAP_ANON | MAP_PRIVATE, -1, 0);
  if (memory == MAP_FAILED) {
    *why = strerror(errno);
    return nil;
  }
  id<MTLBuffer> mtl = [dev->mtl newBufferWithBytesNoCopy:memory
                                                  length:(NSUInteger)bytes
                                                 options:MTLResourceStorageModeShared |
                                                         MTLResourceHazardTrackingModeUntracked |
                                                         MTLResourceCPUCacheModeDefaultCache
                                             deallocator:^(void* pointer, NSUInteger length) {
                                               munmap(pointer, length);
                                             }];
  if (mtl == nil) {
    munmap(memory, (size_t)bytes);
    *why = "Metal could not wrap the memory (newBufferWithBytesNoCopy)";
  }
  return mtl;
}

/* ---- slabs: one MTLBuffer for many small buffers (shim/common/slab.c keeps the books) ---- */

/* Each slab is one MTLBuffer over whole pages; the pool holds it as its owner (+1). */
static void* slab_make(void* ctx, uint64_t bytes, void** owner) {
  SmeltDevice* dev = (__bridge SmeltDevice*)ctx;
  const char* why = NULL;
  id<MTLBuffer> mtl = map_pages(dev, bytes, &why);
  if (mtl == nil) return NULL;
  *owner = (__bridge_retained void*)mtl;
  return mtl.contents;
}

/* The pool's reference goes; the memory is unmapped once no slot handle holds the MTLBuffer
 * either (none does, since the slab is empty) and no lost device keeps it (keepIfLost:). */
static void slab_release(void* ctx, void* owner, void* memory, uint64_t bytes) {
  (void)ctx;
  (void)memory;
  (void)bytes;
  /* ARC takes the +1 of slab_make and drops it here. */
  CFBridgingRelease(owner);
}

/* 128 KiB slabs (eight 16 KiB pages): 512 slots of the smallest size, 16 of the largest. */
#define SLAB_BYTES ((uint64_t)128 * 1024)

smelt_slab_pool* smelt_buffer_slabs_new(SmeltDevice* dev) {
  uint64_t page = (uint64_t)getpagesize();
  smelt_slab_ops ops = {.ctx = (__bridge void*)dev, .make = slab_make, .release = slab_release};
  /* A whole number of pages (newBufferWithBytesNoCopy) and of the largest slot (slab.h); pages
   * are powers of two, so rounding up to pages keeps the second. */
  return smelt_slab_pool_new(&ops, (SLAB_BYTES + page - 1) / page * page);
}

SMELT_API smelt_buffer* smelt_buffer_new(smelt_device* handle, uint64_t length, char* err, size_t errlen) {
  @autoreleasepool {
    if (handle == NULL) {
      smelt_err(err, errlen, "smelt_buffer_new: no device");
      return NULL;
    }
    SmeltDevice* dev = (__bridge SmeltDevice*)(void*)handle;
    if (smelt_device_lost(dev, err, errlen)) return NULL;
    if (length <= SMELT_SLAB_MAX_SLOT) {
      /* A slot of a slab, rather than a page of its own: zero-filled as the ABI promises
       * (slab.c clears a slot handed out again). */
      smelt_slot slot;
      if (smelt_slab_alloc(dev->slabs, length, &slot) != 0) {
        smelt_err(err, errlen, "buffer of %llu bytes: could not map a slab for it (mmap or newBufferWithBytesNoCopy)",
                  (unsigned long long)length);
        return NULL;
      }
      return handle_of(dev, (__bridge id<MTLBuffer>)slot.owner, &slot, length, slot.bytes);
    }
    uint64_t max_length = (uint64_t)dev->mtl.maxBufferLength;
    uint64_t page = (uint64_t)getpagesize();
    /* newBufferWithBytesNoCopy wants a page-aligned pointer and a length in whole pages. */
    if (length > max_length || length > UINT64_MAX - page) {
      smelt_err(err, errlen, "buffer of %llu bytes is larger than this device's maxBufferLength (%llu bytes)",
                (unsigned long long)length, (unsigned long long)max_length);
      return NULL;
    }
    uint64_t mapped = (length + page - 1) / page * page;
    if (mapped > max_length) {
      smelt_err(err, errlen,
                "buffer of %llu bytes needs %llu bytes in whole pages, more than this device's maxBufferLength "
                "(%llu bytes)",
                (unsigned long long)length, (unsigned long long)mapped, (unsigned long long)max_length);
      return NULL;
    }
    const char* why = NULL;
    id<MTLBuffer> mtl = map_pages(dev, mapped, &why);
    if (mtl == nil) {
      smelt_err(err, errlen, "buffer of %llu bytes: %s", (unsigned long long)length, why);
      return NULL;
    }
    return handle_of(dev, mtl, NULL, length, mapped);
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
    return handle_of(dev, mtl, NULL, length, mapped);
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
    /* Command buffers do not retain buffers (command.m): JS frees a buffer only once every
     * command buffer that encoded it finished, so its memory may go, or its slot be handed out
     * again, now. Not on a lost device, where a runaway part may still use it: the device keeps
     * the MTLBuffer (a slot's whole slab) mapped, and no buffer is made any more to reuse it. */
    [dev->core keepIfLost:buf->mtl];
    /* Releasing buf then releases the MTLBuffer: a buffer's own memory is unmapped; a slot goes
     * back to its slab, and the slab's memory once its last slot has. */
    if (buf->slot.slab != NULL) smelt_slab_free(dev->slabs, &buf->slot);
  }
}

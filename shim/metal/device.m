/*
 * device.m: backend identity, opening a Metal device, its limits and counters, and the
 * completion counter that JS reads.
 */
#import "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_COMMIT_EVERY 64u
#define MAX_COMMIT_EVERY (1u << 20)
/* One more than the uncommitted command buffers smelt allows, for a commit's empty last part. */
#define QUEUE_DEPTH (SMELT_MAX_OPEN_COMMAND_BUFFERS + 1u)

SMELT_API uint32_t smelt_abi_version(void) { return SMELT_ABI_VERSION; }

SMELT_API const char* smelt_backend_name(void) { return "metal"; }

@implementation SmeltWaitable

- (instancetype)init {
  if ((self = [super init]) == nil) return nil;
  pthread_mutex_init(&lock, NULL);
  pthread_cond_init(&cond, NULL);
  return self;
}

- (void)dealloc {
  pthread_cond_destroy(&cond);
  pthread_mutex_destroy(&lock);
  free(error);
}

@end

@implementation SmeltPass
@end

@implementation SmeltDeviceCore

- (instancetype)init {
  if ((self = [super init]) == nil) return nil;
  finished_early = [NSMutableIndexSet indexSet];
  pthread_mutex_init(&lock, NULL);
  return self;
}

- (void)dealloc {
  pthread_mutex_destroy(&lock);
  free(unreported_error);
  free(lost_text);
}

- (void)loseWithText:(const char*)text {
  pthread_mutex_lock(&lock);
  if (lost_text == NULL) {
    lost_text = strdup(text);
    if (lost_text != NULL) __atomic_store_n(&lost, 1, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock(&lock);
}

- (int)keepIfLost:(id)object {
  if (!__atomic_load_n(&lost, __ATOMIC_ACQUIRE)) return 0;
  pthread_mutex_lock(&lock);
  if (kept == nil) kept = [NSMutableArray array];
  [kept addObject:object];
  pthread_mutex_unlock(&lock);
  return 1;
}

- (void)finishSequence:(uint64_t)seq error:(const char*)error {
  pthread_mutex_lock(&lock);
  if (error != NULL && unreported_error == NULL) {
    size_t n = strlen(error) + 64;
    unreported_error = malloc(n);
    if (unreported_error != NULL) {
      snprintf(unreported_error, n, "command buffer #%llu failed: %s", (unsigned long long)seq, error);
      unreported_seq = seq;
    }
  }
  /* Sequence numbers fit NSIndexSet's NSUInteger (64-bit on every Mac that runs macOS 13). */
  uint64_t next = completed;
  if (seq == next + 1) {
    next = seq;
    while ([finished_early containsIndex:(NSUInteger)(next + 1)]) {
      [finished_early removeIndex:(NSUInteger)(next + 1)];
      next++;
    }
    /* Release order: whoever sees the new count also sees every write the finished command
     * buffers made, as far as the CPU side is concerned. */
    __atomic_store_n(&completed, next, __ATOMIC_RELEASE);
  } else {
    [finished_early addIndex:(NSUInteger)seq];
  }
  pthread_mutex_unlock(&lock);
}

- (int)takeUnreportedError:(char*)err length:(size_t)errlen {
  pthread_mutex_lock(&lock);
  char* text = unreported_error;
  unreported_error = NULL;
  unreported_seq = 0;
  pthread_mutex_unlock(&lock);
  if (text == NULL) return 0;
  smelt_copy_text(err, errlen, text);
  free(text);
  return 1;
}

- (void)forgetUnreportedErrorOf:(uint64_t)seq {
  pthread_mutex_lock(&lock);
  if (unreported_error != NULL && unreported_seq == seq) {
    free(unreported_error);
    unreported_error = NULL;
    unreported_seq = 0;
  }
  pthread_mutex_unlock(&lock);
}

@end

@implementation SmeltDevice

- (void)dealloc {
  if (live_handles != NULL) CFRelease(live_handles);
  /* Every buffer holds its device, so no slot is left: this releases no slab in use. */
  smelt_slab_pool_free(slabs);
}

@end

int smelt_device_lost(SmeltDevice* dev, char* err, size_t errlen) {
  SmeltDeviceCore* core = dev->core;
  if (!__atomic_load_n(&core->lost, __ATOMIC_ACQUIRE)) return 0;
  smelt_copy_text(err, errlen, core->lost_text);
  return 1;
}

void smelt_device_register(SmeltDevice* dev, const void* handle) {
  if (dev->live_handles != NULL) CFSetAddValue(dev->live_handles, handle);
}

void smelt_device_unregister(SmeltDevice* dev, const void* handle) {
  if (dev->live_handles != NULL) CFSetRemoveValue(dev->live_handles, handle);
}

int smelt_device_knows(SmeltDevice* dev, const void* handle, Class cls) {
  if (dev->live_handles == NULL) return 1;
  /* Only a registered pointer is known to be one of our objects, safe to send a message to. */
  return CFSetContainsValue(dev->live_handles, handle) && [(__bridge id)handle isKindOfClass:cls];
}

static SmeltDevice* dev_of(smelt_device* handle) { return (__bridge SmeltDevice*)(void*)handle; }

typedef struct device_options {
  int debug;
  uint32_t commit_every;
  const char* cache; /* not NUL-terminated: cache_len bytes */
  size_t cache_len;
} device_options;

static int parse_device_option(void* ctx, const char* key, size_t keylen, const char* value, size_t valuelen,
                               char* err, size_t errlen) {
  device_options* o = ctx;
  if (smelt_key_is(key, keylen, "debug")) {
    uint64_t v;
    if (smelt_parse_u64(value, valuelen, &v) != 0 || v > 1) {
      smelt_err(err, errlen, "option debug=%.*s: expected 0 or 1", (int)valuelen, value);
      return -1;
    }
    o->debug = (int)v;
    return 0;
  }
  if (smelt_key_is(key, keylen, "commit_every")) {
    uint64_t v;
    if (smelt_parse_u64(value, valuelen, &v) != 0 || v == 0 || v > MAX_COMMIT_EVERY) {
      smelt_err(err, errlen, "option commit_every=%.*s: expected a whole number from 1 to %u", (int)valuelen,
                value, MAX_COMMIT_EVERY);
      return -1;
    }
    o->commit_every = (uint32_t)v;
    return 0;
  }
  if (smelt_key_is(key, keylen, "cache")) {
    o->cache = value;
    o->cache_len = valuelen;
    return 0;
  }
  /* Accepted everywhere, meaningful only to the host backend. */
  if (smelt_key_is(key, keylen, "threads") ||
      smelt_key_is(key, keylen, "cxx") || smelt_key_is(key, keylen, "include") ||
      smelt_key_is(key, keylen, "host_visible"))
    return 0;
  smelt_err(err, errlen,
            "unknown device option '%.*s' (known: threads, debug, cache, cxx, include, commit_every, host_visible)",
            (int)keylen, key);
  return -1;
}

static id<MTLDevice> pick_device(void) {
  id<MTLDevice> dev = MTLCreateSystemDefaultDevice();
  if (dev != nil) return dev;
  /* Without a default device (no CoreGraphics session, e.g. some headless processes) Metal may
   * still list devices. */
  NSArray<id<MTLDevice>>* all = MTLCopyAllDevices();
  return all.count > 0 ? all[0] : nil;
}

SMELT_API smelt_device* smelt_device_open(const char* options, char* err, size_t errlen) {
  @autoreleasepool {
    device_options o = {.debug = 0, .commit_every = DEFAULT_COMMIT_EVERY};
    if (smelt_options_walk(options, parse_device_option, &o, err, errlen) != 0) return NULL;

    id<MTLDevice> mtl = pick_device();
    if (mtl == nil) {
      smelt_err(err, errlen,
                "no Metal device: MTLCreateSystemDefaultDevice and MTLCopyAllDevices found none "
                "(the metal backend needs macOS on a Mac with a Metal GPU; use SMELT_BACKEND=host elsewhere)");
      return NULL;
    }
    /* newCommandQueue allows 64 unfinished command buffers, and creating one more blocks until
     * one finishes. Parts are committed as they fill, so the cap is only reached when many
     * smelt_cmds are open at once; a larger cap keeps that from stalling JS. */
    id<MTLCommandQueue> queue = [mtl newCommandQueueWithMaxCommandBufferCount:QUEUE_DEPTH];
    if (queue == nil) {
      smelt_err(err, errlen, "Metal device '%s': could not create a command queue", mtl.name.UTF8String);
      return NULL;
    }
    queue.label = @"smelt";

    SmeltDevice* dev = [SmeltDevice new];
    dev->mtl = mtl;
    dev->queue = queue;
    dev->core = [SmeltDeviceCore new];
    dev->commit_every = o.commit_every;
    if (o.cache_len > 0) {
      NSString* dir = [[NSString alloc] initWithBytes:o.cache length:o.cache_len encoding:NSUTF8StringEncoding];
      if (dir == nil) {
        smelt_err(err, errlen, "option cache=...: the directory is not valid UTF-8");
        return NULL;
      }
      /* Its own subdirectory, beside the host backend's kernel cache when both share a DIR. */
      dev->archive_dir = [dir stringByAppendingPathComponent:@"metal"];
      /* An archive holds GPU code for one GPU and one compiler; the OS version stands for the
       * compiler, which comes with it. */
      dev->archive_salt = [NSString stringWithFormat:@"%@\n%@", mtl.name,
                                                     NSProcessInfo.processInfo.operatingSystemVersionString];
    }
    dev->debug = o.debug;
    /* Non-uniform threadgroup sizes (dispatchThreads) need Apple4 or Mac2 family GPUs. */
    dev->nonuniform = [mtl supportsFamily:MTLGPUFamilyApple4] || [mtl supportsFamily:MTLGPUFamilyMac2];
    if (o.debug) dev->live_handles = CFSetCreateMutable(kCFAllocatorDefault, 0, NULL);
    dev->slabs = smelt_buffer_slabs_new(dev);
    if (dev->slabs == NULL) {
      smelt_err(err, errlen, "Metal device '%s': out of memory for the small-buffer slabs", mtl.name.UTF8String);
      return NULL;
    }
    return (__bridge_retained smelt_device*)dev;
  }
}

SMELT_API void smelt_device_close(smelt_device* handle) {
  @autoreleasepool {
    if (handle == NULL) return;
    /* Drops the handle's reference; buffers, libraries, pipelines and command buffers still
     * alive keep the device (and the completion counter) alive until they are freed. */
    SmeltDevice* dev = (__bridge_transfer SmeltDevice*)(void*)handle;
    (void)dev;
  }
}

SMELT_API int smelt_device_name(smelt_device* handle, char* out, size_t outlen) {
  @autoreleasepool {
    if (handle == NULL) return SMELT_ERROR;
    const char* name = dev_of(handle)->mtl.name.UTF8String;
    return smelt_copy_text(out, outlen, name != NULL ? name : "Metal device") == 0 ? SMELT_OK : SMELT_ERROR;
  }
}

static uint32_t clamp_u32(NSUInteger v) { return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v; }

SMELT_API int smelt_device_limits(smelt_device* handle, smelt_limits* out) {
  @autoreleasepool {
    if (handle == NULL || out == NULL) return SMELT_ERROR;
    id<MTLDevice> mtl = dev_of(handle)->mtl;
    memset(out, 0, sizeof *out);
    out->max_buffer_length = (uint64_t)mtl.maxBufferLength;
    /* Apple GPUs give the same total in every dimension; the width is the total per group. */
    out->max_threads_per_threadgroup = clamp_u32(mtl.maxThreadsPerThreadgroup.width);
    out->max_threadgroup_memory = clamp_u32(mtl.maxThreadgroupMemoryLength);
    out->max_buffer_slots = SMELT_MAX_BUFFER_SLOTS;
    out->simd_width = 32;
    out->unified_memory = mtl.hasUnifiedMemory ? 1u : 0u;
    /* Every buffer is in shared storage (buffer.m), so its contents pointer is always usable. */
    out->host_visible = 1;
    return SMELT_OK;
  }
}

SMELT_API int smelt_device_stats_get(smelt_device* handle, smelt_device_stats* out) {
  @autoreleasepool {
    if (handle == NULL || out == NULL) return SMELT_ERROR;
    SmeltDeviceCore* core = dev_of(handle)->core;
    out->buffers = __atomic_load_n(&core->n_buffers, __ATOMIC_RELAXED);
    out->buffer_bytes = __atomic_load_n(&core->n_buffer_bytes, __ATOMIC_RELAXED);
    out->libraries = __atomic_load_n(&core->n_libraries, __ATOMIC_RELAXED);
    out->pipelines = __atomic_load_n(&core->n_pipelines, __ATOMIC_RELAXED);
    out->command_buffers = __atomic_load_n(&core->n_cmds, __ATOMIC_RELAXED);
    out->compiles = __atomic_load_n(&core->n_compiles, __ATOMIC_RELAXED);
    out->cache_hits = 0; /* Metal compiles from source every time; there is no kernel cache here */
    return SMELT_OK;
  }
}

SMELT_API const volatile uint64_t* smelt_device_completion_counter(smelt_device* handle) {
  @autoreleasepool {
    if (handle == NULL) return NULL;
    return &dev_of(handle)->core->completed;
  }
}

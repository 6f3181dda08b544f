/*
 * internal.h: what the files of the Metal backend share. Not part of the ABI.
 *
 * Every handle of smelt.h is one of the Objective-C objects below, handed out with
 * (__bridge_retained void*) and taken back once, in its free function, with (__bridge_transfer).
 * Children hold their device (and pipelines their library) strongly, so freeing in any order is
 * safe. Objects that a Metal completion handler touches (SmeltDeviceCore, SmeltCompletion,
 * SmeltPass) are kept apart from the handles, so that a handler never keeps a handle alive or
 * forms a cycle with the command buffer that holds the handler.
 */
#ifndef SMELT_METAL_INTERNAL_H
#define SMELT_METAL_INTERNAL_H

#import <Foundation/Foundation.h>
#import <Metal/Metal.h>
#include <pthread.h>

#include "smelt.h"
#include "../common/slab.h"

#define SMELT_ATTR_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#define SMELT_PRIVATE __attribute__((visibility("hidden")))

/* ---- error text and option strings (text.m) ---- */

/* Writes a formatted message into the caller's err buffer (truncated, always terminated). */
SMELT_PRIVATE void smelt_err(char* err, size_t errlen, const char* fmt, ...) SMELT_ATTR_PRINTF(3, 4);
/* Copies a C string into out; returns 0 when it fit, -1 when it was truncated or out is empty. */
SMELT_PRIVATE int smelt_copy_text(char* out, size_t outlen, const char* text);
/* A malloc'd copy of an NSString's UTF-8 text (never NULL; "(no description)" for nil). */
SMELT_PRIVATE char* smelt_strdup_ns(NSString* text);

/* Calls fn for each "key=value" of a ';'-separated options string (NULL or empty: no calls).
 * fn returns 0 to go on; its nonzero return stops the walk and is returned. A segment without
 * '=' is reported through err and returns -1. Keys and values are passed with their lengths,
 * not NUL-terminated. */
typedef int (*smelt_option_fn)(void* ctx, const char* key, size_t keylen, const char* value, size_t valuelen,
                               char* err, size_t errlen);
SMELT_PRIVATE int smelt_options_walk(const char* options, smelt_option_fn fn, void* ctx, char* err, size_t errlen);
SMELT_PRIVATE int smelt_key_is(const char* key, size_t keylen, const char* name);
/* Parses a decimal unsigned integer that fills the whole value; returns 0 on success. */
SMELT_PRIVATE int smelt_parse_u64(const char* value, size_t valuelen, uint64_t* out);

/* ---- device (device.m) ---- */

/* What an object that another thread completes needs: a mutex, a condition variable to wait
 * on, and the failure text (malloc'd, or NULL), all released in dealloc. SmeltCompileJob and
 * SmeltCompletion build on it. */
@interface SmeltWaitable : NSObject {
 @public
  pthread_mutex_t lock;
  pthread_cond_t cond;
  char* error;
}
@end

/* One part (MTLCommandBuffer) of a smelt_cmd, as later parts see it: the fence its encoder
 * updates once its dispatches are done. Buffers point at the passes that last used them, and a
 * part waits only on the passes that wrote what it reads or read what it writes. */
@interface SmeltPass : NSObject {
 @public
  id<MTLFence> fence;
  uint64_t serial;   /* parts begun on the device so far, this one included */
  uint64_t waited_by; /* serial of the last part that encoded a wait on this fence (JS thread) */
  /* Set (atomically) by the completion handler: no one needs to wait on it any more. */
  int finished;
  /* The part was dropped uncommitted: its fence will never be committed, and whoever would wait
   * on it waits instead on what it waited on (`waits`, kept only while the part is open or once
   * it was dropped), so that dropping a part never lets later work overtake an earlier writer. */
  int dropped;
  NSMutableArray<SmeltPass*>* waits;
}
@end

/* State that outlives the device handle for as long as any command buffer is in flight: the
 * completion counter JS reads, sequence numbers, and live-object counts. */
@interface SmeltDeviceCore : NSObject {
 @public
  /* Read by JS through smelt_device_completion_counter; written only with __atomic_store_n
   * under `lock`, and only ever upward. */
  uint64_t completed;
  uint64_t next_seq; /* last sequence number handed out by smelt_cmd_commit */
  /* Sequence numbers that finished ahead of an older one still running; the counter moves
   * past a number only when everything below it has finished. */
  NSMutableIndexSet* finished_early;
  /* First failure that no wait or status call has reported yet (malloc'd, or NULL), and the
   * sequence number of the command buffer that failed. */
  char* unreported_error;
  uint64_t unreported_seq;
  pthread_mutex_t lock;

  /* Set once by smelt_cmd_abandon (see smelt.h): lost_text (malloc'd, never changed again) is
   * written before lost is stored with release order. */
  char* lost_text;
  int lost;
  /* Metal objects freed by JS after the loss (under `lock`). Command buffers do not retain what
   * they use, and smelt_cmd_free does not wait on a lost device, so a part still running (a
   * runaway kernel) may use them: they live as long as this core, which its parts' completion
   * handlers hold. */
  NSMutableArray* kept;

  /* Live-object and compile counts (smelt_device_stats); updated with __atomic builtins. */
  uint64_t n_buffers, n_buffer_bytes, n_libraries, n_pipelines, n_cmds, n_compiles;
}
/* Marks the device lost with text, unless it already is. */
- (void)loseWithText:(const char*)text;
/* On a lost device, keeps object (a buffer or pipeline state being freed) and returns 1. */
- (int)keepIfLost:(id)object;
/* Marks seq finished (failed or not) and moves the counter; error: Metal's text or NULL. */
- (void)finishSequence:(uint64_t)seq error:(const char*)error;
/* Moves the unreported failure, if any, into err; returns 1 when there was one. */
- (int)takeUnreportedError:(char*)err length:(size_t)errlen;
/* The failure of seq has just been reported by its own command buffer: do not report it twice. */
- (void)forgetUnreportedErrorOf:(uint64_t)seq;
@end

@interface SmeltDevice : NSObject {
 @public
  id<MTLDevice> mtl;
  id<MTLCommandQueue> queue;
  SmeltDeviceCore* core;
  uint32_t commit_every; /* dispatches per MTLCommandBuffer before it is committed early */
  /* cache=DIR: where compiled pipelines are kept in binary archives (library.m); nil: none.
   * archive_salt: the device's name and the OS version, part of every archive's key. */
  NSString* archive_dir;
  NSString* archive_salt;
  int debug;             /* debug=1: handle registry, binding checks, encoder error reports */
  int nonuniform;        /* dispatchThreads (non-uniform threadgroups) is supported */
  uint32_t open_cmds;    /* smelt_cmds holding dispatches not yet committed */
  uint64_t pass_serial;  /* parts begun so far (SmeltPass.serial) */
  /* The one smelt_cmd whose part holds dispatches not yet committed, or nil. Fences order
   * passes in the order their command buffers are committed, and each buffer's last users are
   * recorded as dispatches are encoded; so that both orders agree, a part is committed before
   * another smelt_cmd begins one (command.m). Cleared when that part is committed or dropped. */
  __unsafe_unretained id open_part_owner;
  /* debug=1 only: every live buffer and pipeline handle of this device, so that a stale or
   * foreign pointer in a record is an error rather than a crash. Pointer set, no retains. */
  CFMutableSetRef live_handles;
  /* Buffers of up to SMELT_SLAB_MAX_SLOT bytes are slots of shared slabs (buffer.m); JS thread
   * only, like every buffer call. Freed with the device, after its last buffer. */
  smelt_slab_pool* slabs;
}
@end

/* 1 with the lost text in err when smelt_cmd_abandon lost the device (every call that starts or
 * waits for work begins here), else 0. */
SMELT_PRIVATE int smelt_device_lost(SmeltDevice* dev, char* err, size_t errlen);

SMELT_PRIVATE void smelt_device_register(SmeltDevice* dev, const void* handle);
SMELT_PRIVATE void smelt_device_unregister(SmeltDevice* dev, const void* handle);
/* 1 when handle is a live handle of this device of class cls; always 1 without debug=1, when
 * there is no registry to ask. */
SMELT_PRIVATE int smelt_device_knows(SmeltDevice* dev, const void* handle, Class cls);

static inline void smelt_count_add(uint64_t* counter, uint64_t amount) {
  __atomic_fetch_add(counter, amount, __ATOMIC_RELAXED);
}
static inline void smelt_count_sub(uint64_t* counter, uint64_t amount) {
  __atomic_fetch_sub(counter, amount, __ATOMIC_RELAXED);
}

/* ---- buffers (buffer.m) ---- */

/* A buffer is either an MTLBuffer of its own, or a slot of a slab's MTLBuffer (slot.slab set):
 * its bytes start `offset` bytes into mtl, which every binding adds. */
@interface SmeltBuffer : NSObject {
 @public
  SmeltDevice* device;
  id<MTLBuffer> mtl; /* its own, or its slab's (which this reference keeps mapped) */
  uint64_t offset;   /* of its first byte in mtl: 0, or the slot's offset in the slab */
  smelt_slot slot;   /* where it lies in its slab; slot.slab is NULL for a buffer of its own */
  void* contents;    /* its first byte */
  uint64_t length;   /* as requested */
  /* What bindings may address from offset: the slot, or the length rounded up to whole pages
   * (at least one page) */
  uint64_t mapped_bytes;
  /* Which passes used it last (JS thread only): the one that may have written it, and those
   * that read it since. Command buffers do not track these buffers (they are untracked and
   * unretained), so a part waits on exactly these fences before it uses the buffer. */
  SmeltPass* writer;
  NSMutableArray<SmeltPass*>* readers;
}
@end

/* The device's pool of small-buffer slabs, each one MTLBuffer over whole pages; NULL when out of
 * memory. */
SMELT_PRIVATE smelt_slab_pool* smelt_buffer_slabs_new(SmeltDevice* dev);

/* ---- libraries and pipelines (library.m) ---- */

/* A compilation of smelt_library_new_async, completed by Metal's completion handler. */
@interface SmeltCompileJob : SmeltWaitable {
 @public
  SmeltDevice* device;
  NSString* archive_path; /* the library's binary archive, or nil (library.m) */
  int done; /* read without the lock by smelt_compile_done, with __atomic builtins */
  id<MTLLibrary> library; /* nil on failure, with the compiler's log as error */
}
@end

@interface SmeltLibrary : NSObject {
 @public
  SmeltDevice* device;
  id<MTLLibrary> mtl;
  /* The binary archive of this library's pipelines on this device, keyed by its source and
   * options, the device and the OS (nil without cache=DIR); loaded when a pipeline is first made. */
  NSString* archive_path;
  id<MTLBinaryArchive> archive;
  /* function name -> SmeltPipelineState, so each kernel is made into a pipeline once. */
  NSMutableDictionary<NSString*, id>* pipelines;
}
@end

/* One compute pipeline and what its reflection said, shared by every handle of one function. */
@interface SmeltPipelineState : NSObject {
 @public
  id<MTLComputePipelineState> pso;
  NSString* function_name;
  smelt_pipeline_info info;
  uint32_t used_buffer_mask;      /* slots the compiled kernel actually reads or writes */
  uint32_t used_threadgroup_mask;
  uint32_t written_buffer_mask;   /* slots reflection does not call read-only */
  uint32_t buffer_alignment[SMELT_MAX_BUFFER_SLOTS]; /* minimum offset alignment per slot */
}
@end

@interface SmeltPipeline : NSObject {
 @public
  SmeltLibrary* library;
  SmeltPipelineState* state;
}
@end

/* ---- command stream (command.m) ---- */

/* Completion bookkeeping of one smelt_cmd, shared with the completion handlers of its
 * MTLCommandBuffers (which run on a thread Metal owns). Guarded by `lock`. */
@interface SmeltCompletion : SmeltWaitable {
 @public
  SmeltDeviceCore* core;
  uint32_t outstanding; /* MTLCommandBuffers committed and not finished */
  int sealed;           /* smelt_cmd_commit ran: no more parts will be added */
  int done;             /* sealed and every part finished */
  uint64_t seq; /* error: the first failure among the parts, sticky */
}
@end

@interface SmeltCmd : NSObject {
 @public
  SmeltDevice* device;
  SmeltCompletion* completion;
  id<MTLCommandBuffer> cb;            /* the part being encoded, nil between parts */
  id<MTLComputeCommandEncoder> enc;   /* its one encoder */
  SmeltPass* pass;                    /* its fence and place in the order */
  int open;                           /* counted in the device's open_cmds */
  uint32_t part_dispatches;           /* dispatches encoded into the current part */
  uint32_t parts;                     /* parts begun so far, for labels and messages */
  int unfenced_writes;                /* a dispatch since the last barrier in this encoder */
  SmeltPipelineState* bound_state;    /* last pipeline set on enc */
  uint64_t records_encoded;           /* dispatch records over all encode calls */
  NSMutableOrderedSet<NSString*>* kernels; /* names of the kernels encoded, for a lost device's text */
  int incomplete; /* Metal failed mid-encode and dispatches were dropped: commit refuses */
}
@end

#endif /* SMELT_METAL_INTERNAL_H */

/*
 * command.m: the command stream. A smelt_cmd is a chain of MTLCommandBuffers ("parts"), each
 * with one concurrent compute encoder; a part is committed as soon as it holds commit_every
 * dispatches so the GPU starts while JS is still encoding, and smelt_cmd_commit commits the last.
 * Completion handlers (on a Metal thread) count finished parts, keep the first error, and when
 * the last part of a committed smelt_cmd finishes, move the device's completion counter and wake
 * smelt_cmd_wait. Nothing here calls into JS.
 */
#import "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

_Static_assert(sizeof(smelt_record) == 48, "smelt_record is 48 bytes in the ABI");
_Static_assert(sizeof(smelt_binding) == 24, "smelt_binding is 24 bytes in the ABI");

@implementation SmeltCompletion

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

@implementation SmeltCmd
@end

static SmeltCmd* cmd_of(smelt_cmd* handle) { return (__bridge SmeltCmd*)(void*)handle; }

/* ---- completion (runs on a thread Metal owns) ---- */

static const char* encoder_state_name(MTLCommandEncoderErrorState s) {
  switch (s) {
    case MTLCommandEncoderErrorStateCompleted: return "completed";
    case MTLCommandEncoderErrorStateAffected: return "affected";
    case MTLCommandEncoderErrorStatePending: return "never started";
    case MTLCommandEncoderErrorStateFaulted: return "faulted";
    default: return "unknown";
  }
}

/* Metal's description of a failed part, plus (debug=1) the state of each encoder and the last
 * dispatch it reached, from the signposts that debug mode inserts. */
static char* describe_failure(id<MTLCommandBuffer> cb, uint32_t part) {
  NSError* error = cb.error;
  NSString* what = error.localizedDescription;
  NSMutableString* text =
      [NSMutableString stringWithFormat:@"Metal command buffer failed (part %u, code %ld): %@", part,
                                        (long)error.code, what != nil ? what : @"no description"];
  NSArray* infos = error.userInfo[MTLCommandBufferEncoderInfoErrorKey];
  if ([infos isKindOfClass:[NSArray class]]) {
    for (id<MTLCommandBufferEncoderInfo> info in infos) {
      [text appendFormat:@"; encoder '%@' %s", info.label, encoder_state_name(info.errorState)];
      NSString* last = info.debugSignposts.lastObject;
      if (last != nil) [text appendFormat:@" (last dispatch: %@)", last];
    }
  }
  return smelt_strdup_ns(text);
}

static void part_finished(SmeltCompletion* c, id<MTLCommandBuffer> cb, uint32_t part) {
  char* failure = cb.status == MTLCommandBufferStatusError ? describe_failure(cb, part) : NULL;
  pthread_mutex_lock(&c->lock);
  if (failure != NULL && c->error == NULL) {
    c->error = failure;
    failure = NULL;
  }
  c->outstanding--;
  int finished = c->sealed && c->outstanding == 0;
  uint64_t seq = c->seq;
  pthread_mutex_unlock(&c->lock);
  free(failure);
  if (finished) {
    /* Every part has finished, so nothing writes c->error any more. */
    [c->core finishSequence:seq error:c->error];
    pthread_mutex_lock(&c->lock);
    c->done = 1;
    pthread_mutex_unlock(&c->lock);
  }
  /* Also wakes smelt_cmd_free waiting for early parts of a smelt_cmd never committed. */
  pthread_cond_broadcast(&c->cond);
}

/* ---- parts ---- */

static int begin_part(SmeltCmd* cmd, int with_encoder, char* err, size_t errlen) {
  SmeltDevice* dev = cmd->device;
  id<MTLCommandBuffer> cb;
  if (dev->debug) {
    MTLCommandBufferDescriptor* desc = [MTLCommandBufferDescriptor new];
    desc.retainedReferences = YES;
    desc.errorOptions = MTLCommandBufferErrorOptionEncoderExecutionStatus;
    cb = [dev->queue commandBufferWithDescriptor:desc];
  } else {
    /* Retained references: a buffer freed by JS while a part uses it stays mapped until the
     * part completes (see buffer.m). */
    cb = [dev->queue commandBuffer];
  }
  if (cb == nil) {
    smelt_err(err, errlen, "Metal could not create a command buffer");
    return -1;
  }
  cmd->parts++;
  if (dev->debug) cb.label = [NSString stringWithFormat:@"smelt part %u", cmd->parts];
  if (with_encoder) {
    id<MTLComputeCommandEncoder> enc = [cb computeCommandEncoderWithDispatchType:MTLDispatchTypeConcurrent];
    if (enc == nil) {
      smelt_err(err, errlen, "Metal could not create a compute command encoder");
      return -1;
    }
    if (dev->debug) enc.label = cb.label;
    /* Buffers are untracked: wait for every pass committed before this one (see internal.h). */
    [enc waitForFence:dev->pass_fence];
    cmd->enc = enc;
  }
  cmd->cb = cb;
  cmd->part_dispatches = 0;
  cmd->unfenced_writes = 0;
  cmd->bound_state = nil;
  return 0;
}

/* Ends the current part's encoder and commits it; seq is nonzero for the last part. */
static void commit_part(SmeltCmd* cmd, uint64_t seq) {
  SmeltDevice* dev = cmd->device;
  if (cmd->enc != nil) {
    [cmd->enc updateFence:dev->pass_fence];
    [cmd->enc endEncoding];
  }
  SmeltCompletion* c = cmd->completion;
  uint32_t part = cmd->parts;
  pthread_mutex_lock(&c->lock);
  c->outstanding++;
  if (seq != 0) {
    c->seq = seq;
    c->sealed = 1;
  }
  pthread_mutex_unlock(&c->lock);
  /* The block holds the completion record, never the smelt_cmd: no cycle through the command
   * buffer, and smelt_cmd_free may run before the handler does. */
  [cmd->cb addCompletedHandler:^(id<MTLCommandBuffer> done) {
    @autoreleasepool {
      part_finished(c, done, part);
    }
  }];
  [cmd->cb commit];
  cmd->cb = nil;
  cmd->enc = nil;
  cmd->bound_state = nil;
}

/* Closes an open part without committing it: its commands are dropped. */
static void abandon_part(SmeltCmd* cmd) {
  if (cmd->enc != nil) [cmd->enc endEncoding];
  cmd->enc = nil;
  cmd->cb = nil;
  cmd->bound_state = nil;
}

SMELT_API smelt_cmd* smelt_cmd_new(smelt_device* handle, char* err, size_t errlen) {
  @autoreleasepool {
    if (handle == NULL) {
      smelt_err(err, errlen, "smelt_cmd_new: no device");
      return NULL;
    }
    SmeltDevice* dev = (__bridge SmeltDevice*)(void*)handle;
    SmeltCmd* cmd = [SmeltCmd new];
    cmd->device = dev;
    cmd->completion = [SmeltCompletion new];
    cmd->completion->core = dev->core;
    smelt_count_add(&dev->core->n_cmds, 1);
    return (__bridge_retained smelt_cmd*)cmd;
  }
}

/* ---- record validation ---- */

static uint32_t round16(uint32_t n) { return (n + 15u) & ~15u; }

static int check_dispatch(SmeltCmd* cmd, const uint8_t* rec, const smelt_record* r, size_t at, char* err,
                          size_t errlen) {
  SmeltDevice* dev = cmd->device;
  void* pipe_ptr = (void*)(uintptr_t)r->pipeline;
  if (pipe_ptr == NULL) {
    smelt_err(err, errlen, "record at byte %zu: dispatch without a pipeline", at);
    return -1;
  }
  if (!smelt_device_knows(dev, pipe_ptr, [SmeltPipeline class])) {
    smelt_err(err, errlen, "record at byte %zu: 0x%llx is not a live pipeline of this device", at,
              (unsigned long long)r->pipeline);
    return -1;
  }
  /* Records hold plain pointers to handles that JS keeps alive for the call: no retains. */
  __unsafe_unretained SmeltPipeline* pipe = (__bridge SmeltPipeline*)pipe_ptr;
  if (pipe->library->device != dev) {
    smelt_err(err, errlen, "record at byte %zu: the pipeline belongs to another device", at);
    return -1;
  }
  __unsafe_unretained SmeltPipelineState* st = pipe->state;
  const char* kname = st->function_name.UTF8String;

  if (r->nbindings > SMELT_MAX_BUFFER_SLOTS) {
    smelt_err(err, errlen, "record at byte %zu (%s): %u bindings; there are %u slots", at, kname, r->nbindings,
              SMELT_MAX_BUFFER_SLOTS);
    return -1;
  }
  if (r->ntgmem > 32) {
    smelt_err(err, errlen, "record at byte %zu (%s): %u threadgroup memory lengths; at most 32", at, kname,
              r->ntgmem);
    return -1;
  }
  uint64_t tables_end = sizeof(smelt_record) + (uint64_t)r->nbindings * sizeof(smelt_binding) +
                        (uint64_t)r->ntgmem * sizeof(uint32_t);
  tables_end = (tables_end + 7u) & ~(uint64_t)7u;
  if (tables_end > r->record_bytes) {
    smelt_err(err, errlen,
              "record at byte %zu (%s): %u bindings and %u threadgroup lengths need %llu bytes; record_bytes is %u",
              at, kname, r->nbindings, r->ntgmem, (unsigned long long)tables_end, r->record_bytes);
    return -1;
  }

  uint32_t bound = 0;
  for (uint32_t i = 0; i < r->nbindings; i++) {
    smelt_binding b;
    memcpy(&b, rec + sizeof(smelt_record) + i * sizeof(smelt_binding), sizeof b);
    if (b.index >= SMELT_MAX_BUFFER_SLOTS) {
      smelt_err(err, errlen, "record at byte %zu (%s): binding %u is [[buffer(%u)]]; slots are 0..%u", at, kname, i,
                b.index, SMELT_MAX_BUFFER_SLOTS - 1);
      return -1;
    }
    if (bound & (1u << b.index)) {
      smelt_err(err, errlen, "record at byte %zu (%s): [[buffer(%u)]] is bound twice", at, kname, b.index);
      return -1;
    }
    bound |= 1u << b.index;
    if (b.kind == SMELT_BIND_BUFFER) {
      void* buf_ptr = (void*)(uintptr_t)b.a;
      if (buf_ptr == NULL || !smelt_device_knows(dev, buf_ptr, [SmeltBuffer class])) {
        smelt_err(err, errlen, "record at byte %zu (%s): [[buffer(%u)]]: 0x%llx is not a live buffer of this device",
                  at, kname, b.index, (unsigned long long)b.a);
        return -1;
      }
      __unsafe_unretained SmeltBuffer* buf = (__bridge SmeltBuffer*)buf_ptr;
      if (buf->device != dev) {
        smelt_err(err, errlen, "record at byte %zu (%s): [[buffer(%u)]] belongs to another device", at, kname,
                  b.index);
        return -1;
      }
      /* The offset may equal the length (an empty view), but Metal needs it inside the
       * allocation, which is whole pages and at least one. */
      if (b.b > buf->length || b.b >= buf->mapped_bytes) {
        smelt_err(err, errlen, "record at byte %zu (%s): [[buffer(%u)]] offset %llu is past the buffer's %llu bytes",
                  at, kname, b.index, (unsigned long long)b.b, (unsigned long long)buf->length);
        return -1;
      }
      uint32_t align = st->buffer_alignment[b.index];
      if (align > 1 && b.b % align != 0) {
        smelt_err(err, errlen, "record at byte %zu (%s): [[buffer(%u)]] offset %llu is not a multiple of %u",
                  at, kname, b.index, (unsigned long long)b.b, align);
        return -1;
      }
    } else if (b.kind == SMELT_BIND_BYTES) {
      if (b.b == 0 || b.b > SMELT_MAX_BYTES_BINDING) {
        smelt_err(err, errlen, "record at byte %zu (%s): [[buffer(%u)]] has %llu constant bytes; 1 to %u allowed",
                  at, kname, b.index, (unsigned long long)b.b, SMELT_MAX_BYTES_BINDING);
        return -1;
      }
      if (b.a < tables_end || b.a > r->record_bytes || b.b > r->record_bytes - b.a) {
        smelt_err(err, errlen,
                  "record at byte %zu (%s): [[buffer(%u)]] bytes at %llu..%llu are outside the record's data "
                  "(%llu..%u)",
                  at, kname, b.index, (unsigned long long)b.a, (unsigned long long)(b.a + b.b),
                  (unsigned long long)tables_end, r->record_bytes);
        return -1;
      }
    } else {
      smelt_err(err, errlen, "record at byte %zu (%s): binding %u has unknown kind %u", at, kname, i, b.kind);
      return -1;
    }
  }
  uint32_t missing = st->used_buffer_mask & ~bound;
  if (missing != 0) {
    smelt_err(err, errlen, "record at byte %zu (%s): the kernel uses [[buffer(%d)]] but the record binds nothing there",
              at, kname, __builtin_ctz(missing));
    return -1;
  }

  uint64_t tg_total = st->info.static_threadgroup_memory;
  uint32_t tg_set = 0;
  for (uint32_t i = 0; i < r->ntgmem; i++) {
    uint32_t len;
    memcpy(&len, rec + sizeof(smelt_record) + r->nbindings * sizeof(smelt_binding) + i * sizeof(uint32_t),
           sizeof len);
    if (len > 0) tg_set |= 1u << i;
    tg_total += round16(len);
  }
  uint32_t tg_missing = st->used_threadgroup_mask & ~tg_set;
  if (tg_missing != 0) {
    smelt_err(err, errlen, "record at byte %zu (%s): the kernel uses [[threadgroup(%d)]] but the record gives it no length",
              at, kname, __builtin_ctz(tg_missing));
    return -1;
  }
  uint64_t tg_limit = dev->mtl.maxThreadgroupMemoryLength;
  if (tg_limit > SMELT_MAX_THREADGROUP_MEMORY) tg_limit = SMELT_MAX_THREADGROUP_MEMORY;
  if (tg_total > tg_limit) {
    smelt_err(err, errlen,
              "record at byte %zu (%s): %llu bytes of threadgroup memory (%u declared in the kernel); the limit is %llu",
              at, kname, (unsigned long long)tg_total, st->info.static_threadgroup_memory,
              (unsigned long long)tg_limit);
    return -1;
  }

  if (r->size[0] == 0 || r->size[1] == 0 || r->size[2] == 0) {
    smelt_err(err, errlen, "record at byte %zu (%s): empty grid %ux%ux%u", at, kname, r->size[0], r->size[1],
              r->size[2]);
    return -1;
  }
  uint64_t tg_threads = (uint64_t)r->threadgroup[0] * r->threadgroup[1] * r->threadgroup[2];
  if (tg_threads == 0 || tg_threads > st->info.max_threads_per_threadgroup) {
    smelt_err(err, errlen, "record at byte %zu (%s): threadgroup %ux%ux%u; this pipeline allows 1 to %u threads", at,
              kname, r->threadgroup[0], r->threadgroup[1], r->threadgroup[2], st->info.max_threads_per_threadgroup);
    return -1;
  }
  MTLSize dims = dev->mtl.maxThreadsPerThreadgroup;
  if (r->threadgroup[0] > dims.width || r->threadgroup[1] > dims.height || r->threadgroup[2] > dims.depth) {
    smelt_err(err, errlen, "record at byte %zu (%s): threadgroup %ux%ux%u exceeds the device's %lux%lux%lu", at, kname,
              r->threadgroup[0], r->threadgroup[1], r->threadgroup[2], (unsigned long)dims.width,
              (unsigned long)dims.height, (unsigned long)dims.depth);
    return -1;
  }
  if (r->kind == SMELT_REC_DISPATCH_THREADS && !dev->nonuniform) {
    smelt_err(err, errlen,
              "record at byte %zu (%s): this GPU has no non-uniform threadgroups; dispatch threadgroups instead", at,
              kname);
    return -1;
  }
  return 0;
}

/* Checks the whole stream before anything is encoded, so a rejected call encodes nothing. */
static int check_stream(SmeltCmd* cmd, const uint8_t* p, size_t length, char* err, size_t errlen) {
  size_t at = 0;
  while (at < length) {
    if (length - at < sizeof(smelt_record)) {
      smelt_err(err, errlen, "record at byte %zu: only %zu bytes left; a record header is %zu", at, length - at,
                sizeof(smelt_record));
      return -1;
    }
    smelt_record r;
    memcpy(&r, p + at, sizeof r);
    if (r.record_bytes < sizeof(smelt_record) || r.record_bytes % 8 != 0 || r.record_bytes > length - at) {
      smelt_err(err, errlen,
                "record at byte %zu: record_bytes %u must be a multiple of 8, at least %zu, and within the %zu "
                "bytes left",
                at, r.record_bytes, sizeof(smelt_record), length - at);
      return -1;
    }
    switch (r.kind) {
      case SMELT_REC_BARRIER:
        if (r.pipeline != 0 || r.nbindings != 0 || r.ntgmem != 0) {
          smelt_err(err, errlen, "record at byte %zu: a barrier has no pipeline, bindings or threadgroup memory", at);
          return -1;
        }
        break;
      case SMELT_REC_DISPATCH_THREADS:
      case SMELT_REC_DISPATCH_THREADGROUPS:
        if (check_dispatch(cmd, p + at, &r, at, err, errlen) != 0) return -1;
        break;
      default:
        smelt_err(err, errlen, "record at byte %zu: unknown record kind %u", at, r.kind);
        return -1;
    }
    at += r.record_bytes;
  }
  return 0;
}

/* ---- encoding (the stream is known to be valid) ---- */

static int encode_dispatch(SmeltCmd* cmd, const uint8_t* rec, const smelt_record* r, char* err, size_t errlen) {
  SmeltDevice* dev = cmd->device;
  if (cmd->enc == nil && begin_part(cmd, 1, err, errlen) != 0) return -1;
  id<MTLComputeCommandEncoder> enc = cmd->enc;
  __unsafe_unretained SmeltPipeline* pipe = (__bridge SmeltPipeline*)(void*)(uintptr_t)r->pipeline;
  SmeltPipelineState* st = pipe->state;
  if (cmd->bound_state != st) {
    [enc setComputePipelineState:st->pso];
    cmd->bound_state = st;
  }
  for (uint32_t i = 0; i < r->nbindings; i++) {
    smelt_binding b;
    memcpy(&b, rec + sizeof(smelt_record) + i * sizeof(smelt_binding), sizeof b);
    if (b.kind == SMELT_BIND_BUFFER) {
      __unsafe_unretained SmeltBuffer* buf = (__bridge SmeltBuffer*)(void*)(uintptr_t)b.a;
      [enc setBuffer:buf->mtl offset:(NSUInteger)b.b atIndex:b.index];
    } else {
      [enc setBytes:rec + b.a length:(NSUInteger)b.b atIndex:b.index];
    }
  }
  for (uint32_t i = 0; i < r->ntgmem; i++) {
    uint32_t len;
    memcpy(&len, rec + sizeof(smelt_record) + r->nbindings * sizeof(smelt_binding) + i * sizeof(uint32_t),
           sizeof len);
    /* Metal wants threadgroup memory lengths in multiples of 16 bytes. */
    if (len > 0) [enc setThreadgroupMemoryLength:round16(len) atIndex:i];
  }
  if (dev->debug) {
    [enc insertDebugSignpost:[NSString stringWithFormat:@"dispatch %llu: %@",
                                                        (unsigned long long)cmd->records_encoded, st->function_name]];
  }
  MTLSize size = MTLSizeMake(r->size[0], r->size[1], r->size[2]);
  MTLSize group = MTLSizeMake(r->threadgroup[0], r->threadgroup[1], r->threadgroup[2]);
  if (r->kind == SMELT_REC_DISPATCH_THREADS)
    [enc dispatchThreads:size threadsPerThreadgroup:group];
  else
    [enc dispatchThreadgroups:size threadsPerThreadgroup:group];
  cmd->unfenced_writes = 1;
  cmd->part_dispatches++;
  cmd->records_encoded++;
  if (cmd->part_dispatches >= dev->commit_every) commit_part(cmd, 0);
  return 0;
}

SMELT_API int smelt_cmd_encode(smelt_cmd* handle, const void* records, size_t length, char* err, size_t errlen) {
  @autoreleasepool {
    if (handle == NULL) {
      smelt_err(err, errlen, "smelt_cmd_encode: no command buffer");
      return SMELT_ERROR;
    }
    SmeltCmd* cmd = cmd_of(handle);
    if (cmd->completion->sealed) {
      smelt_err(err, errlen, "smelt_cmd_encode: the command buffer was already committed");
      return SMELT_ERROR;
    }
    if (cmd->incomplete) {
      smelt_err(err, errlen, "smelt_cmd_encode: an earlier encode failed inside Metal; free this command buffer");
      return SMELT_ERROR;
    }
    if (records == NULL && length > 0) {
      smelt_err(err, errlen, "smelt_cmd_encode: records is NULL");
      return SMELT_ERROR;
    }
    const uint8_t* p = records;
    if (check_stream(cmd, p, length, err, errlen) != 0) return SMELT_ERROR;
    /* Pointers in records are only trusted for the length of one call. */
    cmd->bound_state = nil;
    size_t at = 0;
    while (at < length) {
      smelt_record r;
      memcpy(&r, p + at, sizeof r);
      if (r.kind == SMELT_REC_BARRIER) {
        /* Dispatches in a concurrent encoder may overlap; the barrier orders the buffer writes
         * of those before it against those after. Nothing to order at the start of a part:
         * the part's fence wait already did. */
        if (cmd->enc != nil && cmd->unfenced_writes) {
          [cmd->enc memoryBarrierWithScope:MTLBarrierScopeBuffers];
          cmd->unfenced_writes = 0;
        }
      } else if (encode_dispatch(cmd, p + at, &r, err, errlen) != 0) {
        /* Only Metal failing to create a command buffer or encoder gets here. Dispatches of
         * the open part are lost, so the smelt_cmd can no longer be committed. */
        abandon_part(cmd);
        cmd->incomplete = 1;
        return SMELT_ERROR;
      }
      at += r.record_bytes;
    }
    return SMELT_OK;
  }
}

SMELT_API uint64_t smelt_cmd_commit(smelt_cmd* handle, char* err, size_t errlen) {
  @autoreleasepool {
    if (handle == NULL) {
      smelt_err(err, errlen, "smelt_cmd_commit: no command buffer");
      return 0;
    }
    SmeltCmd* cmd = cmd_of(handle);
    if (cmd->completion->sealed) {
      smelt_err(err, errlen, "smelt_cmd_commit: the command buffer was already committed");
      return 0;
    }
    if (cmd->incomplete) {
      smelt_err(err, errlen, "smelt_cmd_commit: an earlier smelt_cmd_encode failed inside Metal and dropped "
                             "dispatches; free this command buffer and encode a new one");
      return 0;
    }
    /* With nothing left open, the last part is an empty MTLCommandBuffer: it carries the
     * sequence number, and the smelt_cmd is done when it and every earlier part have finished. */
    if (cmd->cb == nil && begin_part(cmd, 0, err, errlen) != 0) return 0;
    SmeltDeviceCore* core = cmd->device->core;
    pthread_mutex_lock(&core->lock);
    uint64_t seq = ++core->next_seq;
    pthread_mutex_unlock(&core->lock);
    commit_part(cmd, seq);
    return seq;
  }
}

/* The final state of a finished smelt_cmd: its own failure, else one that an other command
 * buffer of the device had and no wait or status has reported yet. */
static int finished_state(SmeltCompletion* c, char* err, size_t errlen) {
  if (c->error != NULL) {
    smelt_copy_text(err, errlen, c->error);
    [c->core forgetUnreportedErrorOf:c->seq];
    return SMELT_ERROR;
  }
  if ([c->core takeUnreportedError:err length:errlen]) return SMELT_ERROR;
  return SMELT_CMD_COMPLETED;
}

SMELT_API int smelt_cmd_status(smelt_cmd* handle, char* err, size_t errlen) {
  @autoreleasepool {
    if (handle == NULL) {
      smelt_err(err, errlen, "smelt_cmd_status: no command buffer");
      return SMELT_ERROR;
    }
    SmeltCompletion* c = cmd_of(handle)->completion;
    pthread_mutex_lock(&c->lock);
    int sealed = c->sealed, done = c->done;
    pthread_mutex_unlock(&c->lock);
    if (!sealed) return SMELT_CMD_RECORDING;
    if (!done) return SMELT_CMD_COMMITTED;
    return finished_state(c, err, errlen);
  }
}

SMELT_API int smelt_cmd_wait(smelt_cmd* handle, uint64_t timeout_ms, char* err, size_t errlen) {
  @autoreleasepool {
    if (handle == NULL) {
      smelt_err(err, errlen, "smelt_cmd_wait: no command buffer");
      return SMELT_ERROR;
    }
    SmeltCompletion* c = cmd_of(handle)->completion;
    pthread_mutex_lock(&c->lock);
    if (!c->sealed) {
      pthread_mutex_unlock(&c->lock);
      smelt_err(err, errlen, "smelt_cmd_wait: the command buffer was not committed");
      return SMELT_ERROR;
    }
    if (timeout_ms == 0) {
      while (!c->done) pthread_cond_wait(&c->cond, &c->lock);
    } else {
      /* macOS condition variables time out against the wall clock. */
      const uint64_t max_ms = 1000ull * 60 * 60 * 24 * 365;
      uint64_t ms = timeout_ms < max_ms ? timeout_ms : max_ms;
      struct timespec deadline;
      clock_gettime(CLOCK_REALTIME, &deadline);
      deadline.tv_sec += (time_t)(ms / 1000);
      deadline.tv_nsec += (long)(ms % 1000) * 1000000L;
      if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec += 1;
        deadline.tv_nsec -= 1000000000L;
      }
      while (!c->done) {
        if (pthread_cond_timedwait(&c->cond, &c->lock, &deadline) == ETIMEDOUT && !c->done) {
          pthread_mutex_unlock(&c->lock);
          return SMELT_CMD_TIMEOUT;
        }
      }
    }
    pthread_mutex_unlock(&c->lock);
    return finished_state(c, err, errlen);
  }
}

SMELT_API void smelt_cmd_free(smelt_cmd* handle) {
  @autoreleasepool {
    if (handle == NULL) return;
    SmeltCmd* cmd = (__bridge_transfer SmeltCmd*)(void*)handle;
    /* A part still being encoded was never committed: close its encoder (Metal requires
     * endEncoding before an encoder goes away) and drop it. */
    abandon_part(cmd);
    SmeltCompletion* c = cmd->completion;
    pthread_mutex_lock(&c->lock);
    while (c->outstanding > 0) pthread_cond_wait(&c->cond, &c->lock);
    pthread_mutex_unlock(&c->lock);
    smelt_count_sub(&cmd->device->core->n_cmds, 1);
  }
}

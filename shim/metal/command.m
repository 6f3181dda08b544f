/*
 * command.m: the command stream. A smelt_cmd is a chain of MTLCommandBuffers ("parts"), each
 * with one concurrent compute encoder; a part is committed as soon as it holds commit_every
 * dispatches so the GPU starts while JS is still encoding, and smelt_cmd_commit commits the last.
 * Completion handlers (on a Metal thread) count finished parts, keep the first error, and when
 * the last part of a committed smelt_cmd finishes, move the device's completion counter and wake
 * smelt_cmd_wait. Nothing here calls into JS.
 */
#import "internal.h"

#include "../common/records.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


@implementation SmeltCompletion
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
      [NSMutableString stringWithFormat:@"device lost: Metal command buffer failed (part %u, code %ld): %@", part,
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
  /* A later pass that uses this part's buffers waits on its fence, which a failed command buffer
   * may never update: it could wait forever. So the failure is sticky at device level, before
   * the counter moves: the device is lost with this text, later calls are refused with it, waits
   * do not wait, and JS opens a new device (a failure is rare: a GPU fault or the watchdog). */
  if (failure != NULL) [c->core loseWithText:failure];
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
    /* done before the counter moves: whoever sees the counter pass seq then reads a final
     * status. Every part has finished, so nothing writes c->error any more. */
    pthread_mutex_lock(&c->lock);
    c->done = 1;
    pthread_mutex_unlock(&c->lock);
    [c->core finishSequence:seq error:c->error];
  }
  /* Also wakes smelt_cmd_free waiting for early parts of a smelt_cmd never committed. */
  pthread_cond_broadcast(&c->cond);
}

/* ---- parts ---- */

static void commit_part(SmeltCmd* cmd, uint64_t seq);

static int begin_part(SmeltCmd* cmd, int with_encoder, char* err, size_t errlen) {
  SmeltDevice* dev = cmd->device;
  if (with_encoder) {
    /* The same cap as the host backend's, so that what runs on one runs on the other. Metal's
     * queue blocks the caller once it holds its limit of unfinished command buffers, uncommitted
     * ones included; only one part is ever left uncommitted here, so the cap is not what keeps
     * the queue from blocking forever, but it is kept for that parity. */
    if (!cmd->open && dev->open_cmds >= SMELT_MAX_OPEN_COMMAND_BUFFERS) {
      smelt_err(err, errlen,
                "%u command buffers of this device hold uncommitted dispatches (the most Metal's queue allows "
                "without blocking); commit or free one first",
                SMELT_MAX_OPEN_COMMAND_BUFFERS);
      return -1;
    }
    /* At most one part with dispatches is open on the device (see open_part_owner). */
    SmeltCmd* other = dev->open_part_owner;
    if (other != nil && other != cmd) commit_part(other, 0);
  }
  /* Unretained references: Metal does not retain the buffers and pipelines encoded into the
   * part. JS pins every one a command buffer encodes until that command buffer has finished or
   * been freed, and smelt_cmd_free waits for the parts still running, so nothing the GPU uses is
   * freed under it. The exception, a lost device, whose smelt_cmd_free does not wait, is covered
   * by the device keeping whatever is freed after the loss (keepIfLost:). */
  MTLCommandBufferDescriptor* desc = [MTLCommandBufferDescriptor new];
  desc.retainedReferences = NO;
  if (dev->debug) desc.errorOptions = MTLCommandBufferErrorOptionEncoderExecutionStatus;
  id<MTLCommandBuffer> cb = [dev->queue commandBufferWithDescriptor:desc];
  if (cb == nil) {
    smelt_err(err, errlen, "Metal could not create a command buffer");
    return -1;
  }
  cmd->parts++;
  if (dev->debug) cb.label = [NSString stringWithFormat:@"smelt part %u", cmd->parts];
  if (with_encoder) {
    id<MTLComputeCommandEncoder> enc = [cb computeCommandEncoderWithDispatchType:MTLDispatchTypeConcurrent];
    SmeltPass* pass = [SmeltPass new];
    pass->fence = [dev->mtl newFence];
    pass->waits = [NSMutableArray array];
    if (enc == nil || pass->fence == nil) {
      if (enc != nil) [enc endEncoding];
      smelt_err(err, errlen, "Metal could not create a compute command encoder and its fence");
      return -1;
    }
    if (dev->debug) enc.label = cb.label;
    pass->serial = ++dev->pass_serial;
    cmd->enc = enc;
    cmd->pass = pass;
    dev->open_part_owner = cmd;
    if (!cmd->open) {
      cmd->open = 1;
      dev->open_cmds++;
    }
  }
  cmd->cb = cb;
  cmd->part_dispatches = 0;
  cmd->unfenced_writes = 0;
  cmd->bound_state = nil;
  return 0;
}

/* The smelt_cmd no longer counts against the cap on uncommitted ones (committed or freed). */
static void close_open(SmeltCmd* cmd) {
  if (!cmd->open) return;
  cmd->open = 0;
  cmd->device->open_cmds--;
}

static void forget_part(SmeltCmd* cmd) {
  if (cmd->device->open_part_owner == cmd) cmd->device->open_part_owner = nil;
  cmd->cb = nil;
  cmd->enc = nil;
  cmd->pass = nil;
  cmd->bound_state = nil;
}

/* Ends the current part's encoder and commits it; seq is nonzero for the last part. */
static void commit_part(SmeltCmd* cmd, uint64_t seq) {
  SmeltPass* pass = cmd->pass;
  if (cmd->enc != nil) {
    /* After every dispatch of the part, so no wait of this encoder follows the update of its
     * own fence (which Metal forbids: drivers may move waits to the encoder's start). */
    [cmd->enc updateFence:pass->fence];
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
  /* The block holds the completion record and the pass, never the smelt_cmd: no cycle through
   * the command buffer, and smelt_cmd_free may run before the handler does. */
  [cmd->cb addCompletedHandler:^(id<MTLCommandBuffer> done) {
    @autoreleasepool {
      if (pass != nil) __atomic_store_n(&pass->finished, 1, __ATOMIC_RELEASE);
      part_finished(c, done, part);
    }
  }];
  [cmd->cb commit];
  /* Committed: a wait on its fence covers everything it waited on. */
  if (pass != nil) pass->waits = nil;
  forget_part(cmd);
}

/* Closes an open part without committing it: its commands are dropped, and its fence, which
 * will never be committed, stands for the fences it waited on from now on (wait_for). */
static void abandon_part(SmeltCmd* cmd) {
  if (cmd->pass != nil) cmd->pass->dropped = 1;
  if (cmd->enc != nil) [cmd->enc endEncoding];
  forget_part(cmd);
}

SMELT_API smelt_cmd* smelt_cmd_new(smelt_device* handle, char* err, size_t errlen) {
  @autoreleasepool {
    if (handle == NULL) {
      smelt_err(err, errlen, "smelt_cmd_new: no device");
      return NULL;
    }
    SmeltDevice* dev = (__bridge SmeltDevice*)(void*)handle;
    if (smelt_device_lost(dev, err, errlen)) return NULL;
    SmeltCmd* cmd = [SmeltCmd new];
    cmd->device = dev;
    cmd->kernels = [NSMutableOrderedSet orderedSet];
    cmd->completion = [SmeltCompletion new];
    cmd->completion->core = dev->core;
    smelt_count_add(&dev->core->n_cmds, 1);
    return (__bridge_retained smelt_cmd*)cmd;
  }
}

/* ---- record validation: shim/common/records.c, with what only Metal knows ---- */

static int pipeline_facts(void* ctx, uint64_t handle, smelt_kernel_facts* facts) {
  SmeltDevice* dev = (__bridge SmeltDevice*)ctx;
  void* ptr = (void*)(uintptr_t)handle;
  if (!smelt_device_knows(dev, ptr, [SmeltPipeline class])) return -1;
  /* Records hold plain pointers to handles that JS keeps alive for the call: no retains. */
  __unsafe_unretained SmeltPipeline* pipe = (__bridge SmeltPipeline*)ptr;
  if (pipe->library->device != dev) return -1;
  __unsafe_unretained SmeltPipelineState* st = pipe->state;
  facts->name = st->function_name.UTF8String;
  facts->buffer_mask = st->used_buffer_mask;
  facts->threadgroup_mask = st->used_threadgroup_mask;
  facts->static_threadgroup_memory = st->info.static_threadgroup_memory;
  facts->max_threads_per_threadgroup = st->info.max_threads_per_threadgroup;
  return 0;
}

static int buffer_length(void* ctx, uint64_t handle, uint64_t* length) {
  SmeltDevice* dev = (__bridge SmeltDevice*)ctx;
  void* ptr = (void*)(uintptr_t)handle;
  if (!smelt_device_knows(dev, ptr, [SmeltBuffer class])) return -1;
  __unsafe_unretained SmeltBuffer* buf = (__bridge SmeltBuffer*)ptr;
  if (buf->device != dev) return -1;
  /* debug=1: a live slot handle must be a slot its slab still has handed out; a mismatch means
   * the books and the handles disagree, and binding it could alias another buffer. */
  if (dev->debug && buf->slot.slab != NULL && !smelt_slab_live(dev->slabs, &buf->slot)) return -1;
  *length = buf->length;
  return 0;
}

/* Metal's own rules for a dispatch that passed the common checks. */
static int metal_checks(void* ctx, const smelt_dispatch* d, const smelt_kernel_facts* facts, char* why,
                        size_t whylen) {
  (void)facts;
  SmeltDevice* dev = (__bridge SmeltDevice*)ctx;
  __unsafe_unretained SmeltPipeline* pipe = (__bridge SmeltPipeline*)(void*)(uintptr_t)d->pipeline;
  __unsafe_unretained SmeltPipelineState* st = pipe->state;
  for (uint32_t i = 0; i < d->nbindings; i++) {
    const smelt_binding* b = &d->bindings[i];
    if (b->kind != SMELT_BIND_BUFFER) continue;
    __unsafe_unretained SmeltBuffer* buf = (__bridge SmeltBuffer*)(void*)(uintptr_t)b->a;
    /* The offset may equal the length (an empty view), but Metal needs it inside the
     * allocation: the buffer's whole pages, or its slot of a slab (never empty either). */
    if (b->b >= buf->mapped_bytes) {
      snprintf(why, whylen, "[[buffer(%u)]] offset %llu is at the end of the buffer's %llu allocated bytes", b->index,
               (unsigned long long)b->b, (unsigned long long)buf->mapped_bytes);
      return -1;
    }
    uint32_t align = st->buffer_alignment[b->index];
    if (align > 1 && b->b % align != 0) {
      snprintf(why, whylen, "[[buffer(%u)]] offset %llu is not a multiple of %u", b->index, (unsigned long long)b->b,
               align);
      return -1;
    }
  }
  MTLSize dims = dev->mtl.maxThreadsPerThreadgroup;
  if (d->threadgroup[0] > dims.width || d->threadgroup[1] > dims.height || d->threadgroup[2] > dims.depth) {
    snprintf(why, whylen, "threadgroup %ux%ux%u exceeds the device's %lux%lux%lu", d->threadgroup[0],
             d->threadgroup[1], d->threadgroup[2], (unsigned long)dims.width, (unsigned long)dims.height,
             (unsigned long)dims.depth);
    return -1;
  }
  if (d->kind == SMELT_REC_DISPATCH_THREADS && !dev->nonuniform) {
    snprintf(why, whylen, "this GPU has no non-uniform threadgroups; dispatch threadgroups instead");
    return -1;
  }
  return 0;
}

/* Checks the whole stream before anything is encoded, so a rejected call encodes nothing. */
static int check_stream(SmeltCmd* cmd, const uint8_t* p, size_t length, char* err, size_t errlen) {
  SmeltDevice* dev = cmd->device;
  uint64_t tg_limit = dev->mtl.maxThreadgroupMemoryLength;
  if (tg_limit > SMELT_MAX_THREADGROUP_MEMORY) tg_limit = SMELT_MAX_THREADGROUP_MEMORY;
  smelt_record_env env = {
      .ctx = (__bridge void*)dev,
      .max_threadgroup_memory = (uint32_t)tg_limit,
      .pipeline = pipeline_facts,
      .buffer = buffer_length,
      .dispatch = metal_checks,
  };
  return smelt_records_check(p, length, &env, err, errlen);
}

/* ---- encoding (the stream is known to be valid) ---- */

/* Lengths were checked against the limit by smelt_records_check before any rounding; the sum is
 * still taken in 64 bits so that no length can wrap. */
static NSUInteger round16(uint32_t n) { return ((NSUInteger)n + 15u) & ~(NSUInteger)15u; }

/* Has the open part wait for pass p's fence, once per part, unless p is this part (barriers
 * order dispatches within it) or p finished (its writes are done and visible). For a dropped
 * pass it waits on what that pass waited on instead. Every other pass was committed before the
 * open one (begin_part), so each fence waited on has its update committed earlier on the same
 * queue, as Metal requires. */
static void wait_for(SmeltCmd* cmd, SmeltPass* p) {
  SmeltPass* self = cmd->pass;
  if (p == nil || p == self || p->waited_by == self->serial) return;
  p->waited_by = self->serial;
  if (p->dropped) {
    for (SmeltPass* q in p->waits) wait_for(cmd, q);
    return;
  }
  if (__atomic_load_n(&p->finished, __ATOMIC_ACQUIRE)) return;
  [cmd->enc waitForFence:p->fence];
  [self->waits addObject:p];
}

/* Orders the open part after the passes whose work on buf a dispatch depends on: the last
 * writer for a read (and a write), and every reader since then for a write; then records the
 * part as buf's latest user. Only work on the dispatch's own buffers is waited for, so a part
 * neither waits for unrelated earlier parts nor hangs behind one that failed unless it reads
 * what that one wrote. Metal may move waits to the start of the encoder, which only waits more. */
static void order_buffer(SmeltCmd* cmd, SmeltBuffer* buf, int writes) {
  SmeltPass* self = cmd->pass;
  wait_for(cmd, buf->writer);
  if (writes) {
    for (SmeltPass* reader in buf->readers) wait_for(cmd, reader);
    buf->writer = self;
    [buf->readers removeAllObjects];
    return;
  }
  if (buf->readers == nil) buf->readers = [NSMutableArray array];
  if (buf->readers.lastObject == self) return;
  /* Readers that finished, or were dropped and so read nothing, need no wait; removing them
   * keeps the list as short as the work in flight for buffers that are only ever read (weights). */
  for (NSUInteger i = buf->readers.count; i > 0; i--) {
    SmeltPass* r = buf->readers[i - 1];
    if (r->dropped || __atomic_load_n(&r->finished, __ATOMIC_ACQUIRE)) [buf->readers removeObjectAtIndex:i - 1];
  }
  [buf->readers addObject:self];
}

static int encode_dispatch(SmeltCmd* cmd, const smelt_dispatch* r, char* err, size_t errlen) {
  SmeltDevice* dev = cmd->device;
  if (cmd->enc == nil && begin_part(cmd, 1, err, errlen) != 0) return -1;
  id<MTLComputeCommandEncoder> enc = cmd->enc;
  __unsafe_unretained SmeltPipeline* pipe = (__bridge SmeltPipeline*)(void*)(uintptr_t)r->pipeline;
  SmeltPipelineState* st = pipe->state;
  if (cmd->bound_state != st) {
    [enc setComputePipelineState:st->pso];
    cmd->bound_state = st;
    [cmd->kernels addObject:st->function_name];
  }
  for (uint32_t i = 0; i < r->nbindings; i++) {
    const smelt_binding* b = &r->bindings[i];
    if (b->kind == SMELT_BIND_BUFFER) {
      __unsafe_unretained SmeltBuffer* buf = (__bridge SmeltBuffer*)(void*)(uintptr_t)b->a;
      order_buffer(cmd, buf, (st->written_buffer_mask >> b->index) & 1u);
      /* A slot's bytes start at its offset in the slab's MTLBuffer. */
      [enc setBuffer:buf->mtl offset:(NSUInteger)(buf->offset + b->b) atIndex:b->index];
    } else {
      [enc setBytes:r->bytes[i] length:(NSUInteger)b->b atIndex:b->index];
    }
  }
  for (uint32_t i = 0; i < r->ntgmem; i++) {
    /* Metal wants threadgroup memory lengths in multiples of 16 bytes. */
    if (r->tgmem[i] > 0) [enc setThreadgroupMemoryLength:round16(r->tgmem[i]) atIndex:i];
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
    if (smelt_device_lost(cmd->device, err, errlen)) return SMELT_ERROR;
    const uint8_t* p = records;
    if (check_stream(cmd, p, length, err, errlen) != 0) return SMELT_ERROR;
    /* Pointers in records are only trusted for the length of one call. */
    cmd->bound_state = nil;
    size_t at = 0;
    smelt_dispatch r;
    while (smelt_records_next(p, length, &at, &r)) {
      if (r.kind == SMELT_REC_BARRIER) {
        /* Dispatches in a concurrent encoder may overlap; the barrier orders the buffer writes
         * of those before it against those after. Nothing to order at the start of a part:
         * its fence waits order it after earlier parts. */
        if (cmd->enc != nil && cmd->unfenced_writes) {
          [cmd->enc memoryBarrierWithScope:MTLBarrierScopeBuffers];
          cmd->unfenced_writes = 0;
        }
      } else if (encode_dispatch(cmd, &r, err, errlen) != 0) {
        /* Only Metal failing to create a command buffer or encoder gets here. Dispatches of
         * the open part are lost, so the smelt_cmd can no longer be committed. */
        abandon_part(cmd);
        cmd->incomplete = 1;
        return SMELT_ERROR;
      }
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
    if (smelt_device_lost(cmd->device, err, errlen)) return 0;
    /* With nothing left open, the last part is an empty MTLCommandBuffer: it carries the
     * sequence number, and the smelt_cmd is done when it and every earlier part have finished. */
    if (cmd->cb == nil && begin_part(cmd, 0, err, errlen) != 0) return 0;
    close_open(cmd);
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
    if (!done) return smelt_device_lost(cmd_of(handle)->device, err, errlen) ? SMELT_ERROR : SMELT_CMD_COMMITTED;
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
    /* Only the GPU's own watchdog ends a runaway kernel: a lost device's waits do not wait. */
    if (!c->done && smelt_device_lost(cmd_of(handle)->device, err, errlen)) {
      pthread_mutex_unlock(&c->lock);
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

SMELT_API int smelt_cmd_abandon(smelt_cmd* handle, char* err, size_t errlen) {
  @autoreleasepool {
    if (handle == NULL) {
      smelt_err(err, errlen, "smelt_cmd_abandon: no command buffer");
      return SMELT_ERROR;
    }
    SmeltCmd* cmd = cmd_of(handle);
    SmeltCompletion* c = cmd->completion;
    pthread_mutex_lock(&c->lock);
    int sealed = c->sealed, done = c->done;
    uint64_t seq = c->seq;
    pthread_mutex_unlock(&c->lock);
    if (!sealed) {
      smelt_err(err, errlen, "smelt_cmd_abandon: the command buffer was never committed");
      return SMELT_ERROR;
    }
    if (done) return SMELT_OK;
    NSString* names = cmd->kernels.count > 0 ? [cmd->kernels.array componentsJoinedByString:@"', '"] : @"";
    NSString* text = [NSString
        stringWithFormat:@"device lost: command buffer #%llu was abandoned unfinished%@ (a kernel that never "
                         @"returns); open a new device",
                         (unsigned long long)seq,
                         names.length > 0 ? [NSString stringWithFormat:@" in kernel '%@'", names] : @""];
    [cmd->device->core loseWithText:text.UTF8String];
    smelt_device_lost(cmd->device, err, errlen);
    return SMELT_ERROR;
  }
}

SMELT_API void smelt_cmd_free(smelt_cmd* handle) {
  @autoreleasepool {
    if (handle == NULL) return;
    SmeltCmd* cmd = (__bridge_transfer SmeltCmd*)(void*)handle;
    /* A part still being encoded was never committed: close its encoder (Metal requires
     * endEncoding before an encoder goes away) and drop it. */
    abandon_part(cmd);
    close_open(cmd);
    SmeltCompletion* c = cmd->completion;
    /* On a lost device nothing waits: the completion record, held by the handlers, outlives
     * the smelt_cmd, and Metal keeps its command buffers until they end. */
    if (!smelt_device_lost(cmd->device, NULL, 0)) {
      pthread_mutex_lock(&c->lock);
      while (c->outstanding > 0) pthread_cond_wait(&c->cond, &c->lock);
      pthread_mutex_unlock(&c->lock);
    }
    smelt_count_sub(&cmd->device->core->n_cmds, 1);
  }
}

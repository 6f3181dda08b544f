/*
 * records.c: the record stream's checks and decoding (see records.h). Plain C99 with no
 * allocation, so that any backend's language (C++, Objective-C, CUDA's host C++) can use it.
 */
#include "records.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define HEADER ((size_t)sizeof(smelt_record))
#define BINDING ((size_t)sizeof(smelt_binding))

typedef char smelt_record_is_48_bytes[sizeof(smelt_record) == 48 ? 1 : -1];
typedef char smelt_binding_is_24_bytes[sizeof(smelt_binding) == 24 ? 1 : -1];

#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 3, 4)))
#endif
static void say(char* err, size_t errlen, const char* fmt, ...) {
  if (err == NULL || errlen == 0) return;
  va_list args;
  va_start(args, fmt);
  vsnprintf(err, errlen, fmt, args);
  va_end(args);
}

static uint64_t round16(uint64_t n) { return (n + 15u) & ~(uint64_t)15u; }

/* Index of the lowest set bit of a nonzero mask (no compiler builtins: any C compiler builds this). */
static unsigned lowest_bit(uint32_t mask) {
  unsigned i = 0;
  while (!(mask & 1u)) mask >>= 1, i++;
  return i;
}

/* Where the threadgroup lengths and the constant bytes of a record start. */
static size_t tgmem_offset(uint32_t nbindings) { return HEADER + (size_t)nbindings * BINDING; }
static size_t data_offset(uint32_t nbindings, uint32_t ntgmem) {
  return (tgmem_offset(nbindings) + (size_t)ntgmem * 4u + 7u) & ~(size_t)7u;
}

/* Fills out from the record at `at`, whose header and tables are known to lie in the stream. */
static void read_record(const uint8_t* p, size_t at, smelt_dispatch* out) {
  smelt_record h;
  memcpy(&h, p + at, sizeof h);
  memset(out, 0, sizeof *out);
  out->kind = h.kind;
  out->at = at;
  if (h.kind == SMELT_REC_BARRIER) return;
  out->pipeline = h.pipeline;
  memcpy(out->size, h.size, sizeof out->size);
  memcpy(out->threadgroup, h.threadgroup, sizeof out->threadgroup);
  out->nbindings = h.nbindings;
  out->ntgmem = h.ntgmem;
  const uint8_t* rec = p + at;
  for (uint32_t i = 0; i < h.nbindings; i++) {
    memcpy(&out->bindings[i], rec + HEADER + i * BINDING, BINDING);
    if (out->bindings[i].kind == SMELT_BIND_BYTES) out->bytes[i] = rec + out->bindings[i].a;
  }
  memcpy(out->tgmem, rec + tgmem_offset(h.nbindings), (size_t)h.ntgmem * 4u);
}

uint64_t smelt_dispatch_threadgroup_bytes(const smelt_dispatch* d) {
  uint64_t total = 0;
  for (uint32_t i = 0; i < d->ntgmem; i++) total += round16(d->tgmem[i]);
  return total;
}

/* The checks of one dispatch record; h is its header, rec its first byte. */
static int check_dispatch(const uint8_t* p, size_t at, const smelt_record* h, const smelt_record_env* env,
                          char* err, size_t errlen) {
  if (h->pipeline == 0) {
    say(err, errlen, "record at byte %zu: dispatch without a pipeline", at);
    return -1;
  }
  smelt_kernel_facts facts;
  memset(&facts, 0, sizeof facts);
  if (env->pipeline(env->ctx, h->pipeline, &facts) != 0) {
    say(err, errlen, "record at byte %zu: 0x%llx is not a live pipeline of this device", at,
        (unsigned long long)h->pipeline);
    return -1;
  }
  const char* k = facts.name != NULL ? facts.name : "?";
  if (h->nbindings > SMELT_MAX_BUFFER_SLOTS) {
    say(err, errlen, "record at byte %zu (%s): %u bindings; Metal has %u buffer slots, [[buffer(0)]]..[[buffer(%u)]]",
        at, k, h->nbindings, SMELT_MAX_BUFFER_SLOTS, SMELT_MAX_BUFFER_SLOTS - 1);
    return -1;
  }
  if (h->ntgmem > SMELT_MAX_THREADGROUP_SLOTS) {
    say(err, errlen,
        "record at byte %zu (%s): %u threadgroup memory lengths; Metal has %u threadgroup memory slots, "
        "[[threadgroup(0)]]..[[threadgroup(%u)]]",
        at, k, h->ntgmem, SMELT_MAX_THREADGROUP_SLOTS, SMELT_MAX_THREADGROUP_SLOTS - 1);
    return -1;
  }
  size_t data_at = data_offset(h->nbindings, h->ntgmem);
  if (data_at > h->record_bytes) {
    say(err, errlen, "record at byte %zu (%s): %u bindings and %u threadgroup lengths need %zu bytes; record_bytes is %u",
        at, k, h->nbindings, h->ntgmem, data_at, h->record_bytes);
    return -1;
  }

  smelt_dispatch d;
  read_record(p, at, &d);
  uint32_t bound = 0;
  for (uint32_t i = 0; i < d.nbindings; i++) {
    const smelt_binding* b = &d.bindings[i];
    if (b->index >= SMELT_MAX_BUFFER_SLOTS) {
      say(err, errlen, "record at byte %zu (%s): binding %u is [[buffer(%u)]]; Metal has %u buffer slots, "
          "[[buffer(0)]]..[[buffer(%u)]]", at, k, i, b->index, SMELT_MAX_BUFFER_SLOTS, SMELT_MAX_BUFFER_SLOTS - 1);
      return -1;
    }
    if (bound & (1u << b->index)) {
      say(err, errlen, "record at byte %zu (%s): [[buffer(%u)]] is bound twice", at, k, b->index);
      return -1;
    }
    bound |= 1u << b->index;
    if (b->kind == SMELT_BIND_BUFFER) {
      uint64_t length = 0;
      if (b->a == 0 || env->buffer(env->ctx, b->a, &length) != 0) {
        say(err, errlen, "record at byte %zu (%s): [[buffer(%u)]]: 0x%llx is not a live buffer of this device", at,
            k, b->index, (unsigned long long)b->a);
        return -1;
      }
      if (b->b > length) {
        say(err, errlen, "record at byte %zu (%s): [[buffer(%u)]] offset %llu is past the buffer's %llu bytes", at, k,
            b->index, (unsigned long long)b->b, (unsigned long long)length);
        return -1;
      }
    } else if (b->kind == SMELT_BIND_BYTES) {
      if (b->b == 0 || b->b > SMELT_MAX_BYTES_BINDING) {
        say(err, errlen, "record at byte %zu (%s): [[buffer(%u)]] has %llu constant bytes; 1 to %u allowed", at, k,
            b->index, (unsigned long long)b->b, SMELT_MAX_BYTES_BINDING);
        return -1;
      }
      if (b->a < data_at || b->a > h->record_bytes || b->b > h->record_bytes - b->a) {
        say(err, errlen,
            "record at byte %zu (%s): [[buffer(%u)]] bytes at %llu..%llu are outside the record's data (%zu..%u)", at,
            k, b->index, (unsigned long long)b->a, (unsigned long long)(b->a + b->b), data_at, h->record_bytes);
        return -1;
      }
    } else {
      say(err, errlen, "record at byte %zu (%s): binding %u has unknown kind %u", at, k, i, b->kind);
      return -1;
    }
  }
  uint32_t missing = facts.buffer_mask & ~bound;
  if (missing != 0) {
    say(err, errlen, "record at byte %zu (%s): the kernel uses [[buffer(%u)]] but the record binds nothing there", at,
        k, lowest_bit(missing));
    return -1;
  }

  uint32_t tg_set = 0;
  for (uint32_t i = 0; i < d.ntgmem; i++)
    if (d.tgmem[i] > 0) tg_set |= 1u << i;
  uint32_t tg_missing = facts.threadgroup_mask & ~tg_set;
  if (tg_missing != 0) {
    say(err, errlen, "record at byte %zu (%s): the kernel uses [[threadgroup(%u)]] but the record gives it no length",
        at, k, lowest_bit(tg_missing));
    return -1;
  }
  uint64_t tg_total = smelt_dispatch_threadgroup_bytes(&d) + facts.static_threadgroup_memory;
  if (tg_total > env->max_threadgroup_memory) {
    say(err, errlen, "record at byte %zu (%s): %llu bytes of threadgroup memory (%u declared in the kernel); the limit is %u",
        at, k, (unsigned long long)tg_total, facts.static_threadgroup_memory, env->max_threadgroup_memory);
    return -1;
  }

  if (d.size[0] == 0 || d.size[1] == 0 || d.size[2] == 0) {
    say(err, errlen, "record at byte %zu (%s): empty grid %ux%ux%u", at, k, d.size[0], d.size[1], d.size[2]);
    return -1;
  }
  uint64_t per_group = (uint64_t)d.threadgroup[0] * d.threadgroup[1] * d.threadgroup[2];
  if (per_group == 0 || per_group > facts.max_threads_per_threadgroup) {
    say(err, errlen, "record at byte %zu (%s): threadgroup %ux%ux%u; this pipeline allows 1 to %u threads", at, k,
        d.threadgroup[0], d.threadgroup[1], d.threadgroup[2], facts.max_threads_per_threadgroup);
    return -1;
  }
  uint64_t groups = 1;
  for (int i = 0; i < 3; i++) {
    int by_threads = d.kind == SMELT_REC_DISPATCH_THREADS;
    uint64_t threads = by_threads ? d.size[i] : (uint64_t)d.size[i] * d.threadgroup[i];
    if (threads > 0xffffffffull) {
      say(err, errlen, "record at byte %zu (%s): grid is over 2^32 threads in dimension %d", at, k, i);
      return -1;
    }
    groups *= by_threads ? (d.size[i] + (uint64_t)d.threadgroup[i] - 1) / d.threadgroup[i] : d.size[i];
    if (groups > 0xffffffffull) {
      say(err, errlen, "record at byte %zu (%s): grid is over 2^32 threadgroups", at, k);
      return -1;
    }
  }

  if (env->dispatch != NULL) {
    char why[512];
    why[0] = 0;
    if (env->dispatch(env->ctx, &d, &facts, why, sizeof why) != 0) {
      say(err, errlen, "record at byte %zu (%s): %s", at, k, why);
      return -1;
    }
  }
  return 0;
}

int smelt_records_check(const void* records, size_t length, const smelt_record_env* env, char* err, size_t errlen) {
  const uint8_t* p = (const uint8_t*)records;
  if (p == NULL && length > 0) {
    say(err, errlen, "the record stream is NULL");
    return -1;
  }
  size_t at = 0;
  while (at < length) {
    if (length - at < HEADER) {
      say(err, errlen, "record at byte %zu: only %zu bytes left; a record header is %zu", at, length - at, HEADER);
      return -1;
    }
    smelt_record h;
    memcpy(&h, p + at, sizeof h);
    if (h.record_bytes < HEADER || h.record_bytes % 8 != 0 || h.record_bytes > length - at) {
      say(err, errlen, "record at byte %zu: record_bytes %u must be a multiple of 8, at least %zu, and within the %zu bytes left",
          at, h.record_bytes, HEADER, length - at);
      return -1;
    }
    switch (h.kind) {
      case SMELT_REC_BARRIER:
        if (h.pipeline != 0 || h.nbindings != 0 || h.ntgmem != 0) {
          say(err, errlen, "record at byte %zu: a barrier has no pipeline, bindings or threadgroup memory", at);
          return -1;
        }
        break;
      case SMELT_REC_DISPATCH_THREADS:
      case SMELT_REC_DISPATCH_THREADGROUPS:
        if (check_dispatch(p, at, &h, env, err, errlen) != 0) return -1;
        break;
      default:
        say(err, errlen, "record at byte %zu: unknown record kind %u", at, h.kind);
        return -1;
    }
    at += h.record_bytes;
  }
  return 0;
}

int smelt_records_next(const void* records, size_t length, size_t* at, smelt_dispatch* out) {
  if (*at >= length) return 0;
  const uint8_t* p = (const uint8_t*)records;
  smelt_record h;
  memcpy(&h, p + *at, sizeof h);
  read_record(p, *at, out);
  *at += h.record_bytes;
  return 1;
}

/*
 * slab.c: the books of small-buffer slabs (see slab.h). Plain C with malloc only, so that any
 * backend and a test on any OS build the same code.
 */
#include "slab.h"

#include <stdlib.h>
#include <string.h>

struct smelt_slab {
  /* In its class's list, where every slab with a free slot comes before every full one, so the
   * head is where a slot is found, if anywhere. */
  smelt_slab* prev;
  smelt_slab* next;
  void* owner;
  uint8_t* memory;
  uint64_t slot_bytes;
  uint32_t klass;
  uint32_t nslots;
  uint32_t used;
  /* Slots from `fresh` up were never handed out, so they are still zero from make; freed ones
   * wait on `stack` and are cleared when handed out again. */
  uint32_t fresh;
  uint32_t nfree;
  uint32_t* stack;
  uint64_t* live; /* one bit per slot: handed out and not freed */
};

struct smelt_slab_pool {
  smelt_slab_ops ops;
  uint64_t slab_bytes;
  smelt_slab* head[SMELT_SLAB_CLASSES];
  smelt_slab* tail[SMELT_SLAB_CLASSES];
  smelt_slab_stats stats;
};

uint64_t smelt_slab_slot_bytes(uint64_t length) {
  if (length > SMELT_SLAB_MAX_SLOT) return 0;
  uint64_t bytes = SMELT_SLAB_MIN_SLOT;
  while (bytes < length) bytes <<= 1;
  return bytes;
}

static uint32_t class_of(uint64_t slot_bytes) {
  uint32_t k = 0;
  while ((SMELT_SLAB_MIN_SLOT << k) < slot_bytes) k++;
  return k;
}

smelt_slab_pool* smelt_slab_pool_new(const smelt_slab_ops* ops, uint64_t slab_bytes) {
  if (ops == NULL || ops->make == NULL || ops->release == NULL) return NULL;
  if (slab_bytes == 0 || slab_bytes % SMELT_SLAB_MAX_SLOT != 0 || slab_bytes > ((uint64_t)1 << 32)) return NULL;
  smelt_slab_pool* pool = calloc(1, sizeof *pool);
  if (pool == NULL) return NULL;
  pool->ops = *ops;
  pool->slab_bytes = slab_bytes;
  return pool;
}

static void unlink_slab(smelt_slab_pool* pool, smelt_slab* s) {
  if (s->prev != NULL) s->prev->next = s->next;
  else pool->head[s->klass] = s->next;
  if (s->next != NULL) s->next->prev = s->prev;
  else pool->tail[s->klass] = s->prev;
  s->prev = s->next = NULL;
}

static void push_front(smelt_slab_pool* pool, smelt_slab* s) {
  uint32_t k = s->klass;
  s->prev = NULL;
  s->next = pool->head[k];
  if (pool->head[k] != NULL) pool->head[k]->prev = s;
  else pool->tail[k] = s;
  pool->head[k] = s;
}

static void push_back(smelt_slab_pool* pool, smelt_slab* s) {
  uint32_t k = s->klass;
  s->next = NULL;
  s->prev = pool->tail[k];
  if (pool->tail[k] != NULL) pool->tail[k]->next = s;
  else pool->head[k] = s;
  pool->tail[k] = s;
}

static void release_slab(smelt_slab_pool* pool, smelt_slab* s) {
  pool->ops.release(pool->ops.ctx, s->owner, s->memory, pool->slab_bytes);
  pool->stats.slabs--;
  pool->stats.slab_bytes -= pool->slab_bytes;
  free(s);
}

static smelt_slab* new_slab(smelt_slab_pool* pool, uint32_t klass, uint64_t slot_bytes) {
  uint32_t nslots = (uint32_t)(pool->slab_bytes / slot_bytes);
  size_t words = ((size_t)nslots + 63) / 64;
  /* The slab's books in one allocation: header, then the live bits, then the free stack. */
  size_t size = sizeof(smelt_slab) + words * sizeof(uint64_t) + (size_t)nslots * sizeof(uint32_t);
  smelt_slab* s = calloc(1, size);
  if (s == NULL) return NULL;
  void* owner = NULL;
  void* memory = pool->ops.make(pool->ops.ctx, pool->slab_bytes, &owner);
  if (memory == NULL) {
    free(s);
    return NULL;
  }
  s->owner = owner;
  s->memory = memory;
  s->slot_bytes = slot_bytes;
  s->klass = klass;
  s->nslots = nslots;
  s->live = (uint64_t*)(void*)(s + 1);
  s->stack = (uint32_t*)(void*)(s->live + words);
  pool->stats.slabs++;
  pool->stats.slab_bytes += pool->slab_bytes;
  return s;
}

int smelt_slab_alloc(smelt_slab_pool* pool, uint64_t length, smelt_slot* out) {
  uint64_t bytes = smelt_slab_slot_bytes(length);
  if (pool == NULL || out == NULL || bytes == 0) return -1;
  uint32_t k = class_of(bytes);
  smelt_slab* s = pool->head[k];
  if (s == NULL || s->used == s->nslots) {
    s = new_slab(pool, k, bytes);
    if (s == NULL) return -1;
    push_front(pool, s);
  }
  uint32_t i;
  int reused = s->nfree > 0;
  if (reused) i = s->stack[--s->nfree];
  else i = s->fresh++;
  s->live[i / 64] |= (uint64_t)1 << (i % 64);
  s->used++;
  if (s->used == s->nslots && s->next != NULL) {
    unlink_slab(pool, s);
    push_back(pool, s);
  }
  out->slab = s;
  out->owner = s->owner;
  out->offset = (uint64_t)i * bytes;
  out->memory = s->memory + out->offset;
  out->bytes = bytes;
  /* Its last user freed it only once done with it (slab.h), so the CPU may clear it now. */
  if (reused) memset(out->memory, 0, (size_t)bytes);
  pool->stats.slots++;
  pool->stats.slot_bytes += bytes;
  return 0;
}

/* The slot's index in its slab when the slot's numbers agree with the slab's, else -1. */
static int64_t index_in(const smelt_slab* s, const smelt_slot* slot) {
  if (slot->bytes != s->slot_bytes || slot->offset % s->slot_bytes != 0) return -1;
  uint64_t i = slot->offset / s->slot_bytes;
  if (i >= s->nslots || slot->memory != s->memory + slot->offset) return -1;
  if (!(s->live[i / 64] >> (i % 64) & 1u)) return -1;
  return (int64_t)i;
}

void smelt_slab_free(smelt_slab_pool* pool, const smelt_slot* slot) {
  if (pool == NULL || slot == NULL || slot->slab == NULL) return;
  smelt_slab* s = slot->slab;
  int64_t found = index_in(s, slot);
  if (found < 0) return;
  uint32_t i = (uint32_t)found;
  s->live[i / 64] &= ~((uint64_t)1 << (i % 64));
  s->stack[s->nfree++] = i;
  int was_full = s->used == s->nslots;
  s->used--;
  pool->stats.slots--;
  pool->stats.slot_bytes -= s->slot_bytes;
  if (s->used == 0) {
    unlink_slab(pool, s);
    release_slab(pool, s);
  } else if (was_full && s->prev != NULL) {
    unlink_slab(pool, s);
    push_front(pool, s);
  }
}

int smelt_slab_live(const smelt_slab_pool* pool, const smelt_slot* slot) {
  if (pool == NULL || slot == NULL || slot->slab == NULL) return 0;
  uint64_t bytes = smelt_slab_slot_bytes(slot->bytes);
  if (bytes == 0 || bytes != slot->bytes) return 0;
  for (const smelt_slab* s = pool->head[class_of(bytes)]; s != NULL; s = s->next) {
    if (s == slot->slab) return index_in(s, slot) >= 0;
  }
  return 0;
}

void smelt_slab_stats_get(const smelt_slab_pool* pool, smelt_slab_stats* out) {
  if (out == NULL) return;
  if (pool == NULL) {
    memset(out, 0, sizeof *out);
    return;
  }
  *out = pool->stats;
}

void smelt_slab_pool_free(smelt_slab_pool* pool) {
  if (pool == NULL) return;
  for (uint32_t k = 0; k < SMELT_SLAB_CLASSES; k++) {
    for (smelt_slab* s = pool->head[k]; s != NULL;) {
      smelt_slab* next = s->next;
      release_slab(pool, s);
      s = next;
    }
  }
  free(pool);
}

/*
 * slab-harness.c: shim/common/slab.c behind plain exported functions, with slabs made by mmap as
 * the Metal backend makes them, so test/host/slabs.test.ts can drive the allocator through
 * bun:ffi. Built by that test only; no backend links it.
 */
/* MAP_ANON under -std=c11 */
#define _DEFAULT_SOURCE
#define _DARWIN_C_SOURCE

#include "slab.h"

#include <stdint.h>
#include <sys/mman.h>

#define EXPORT __attribute__((visibility("default")))

static uint64_t made, released;
static int refuse_next;

static void* make(void* ctx, uint64_t bytes, void** owner) {
  (void)ctx;
  if (refuse_next) {
    refuse_next = 0;
    return NULL;
  }
  void* memory = mmap(NULL, (size_t)bytes, PROT_READ | PROT_WRITE, MAP_ANON | MAP_PRIVATE, -1, 0);
  if (memory == MAP_FAILED) return NULL;
  /* Each slab's owner is its serial number, so the test can tell slabs apart by it. */
  *owner = (void*)(uintptr_t)++made;
  return memory;
}

/* Unmapped at once: a slot used after its slab went would fault rather than pass. */
static void release(void* ctx, void* owner, void* memory, uint64_t bytes) {
  (void)ctx;
  (void)owner;
  munmap(memory, (size_t)bytes);
  released++;
}

EXPORT void* harness_pool_new(uint64_t slab_bytes) {
  smelt_slab_ops ops = {.ctx = NULL, .make = make, .release = release};
  return smelt_slab_pool_new(&ops, slab_bytes);
}
EXPORT void harness_pool_free(void* pool) { smelt_slab_pool_free(pool); }
EXPORT uint64_t harness_slot_bytes(uint64_t length) { return smelt_slab_slot_bytes(length); }
EXPORT int harness_alloc(void* pool, uint64_t length, smelt_slot* out) { return smelt_slab_alloc(pool, length, out); }
EXPORT void harness_free(void* pool, const smelt_slot* slot) { smelt_slab_free(pool, slot); }
EXPORT int harness_live(void* pool, const smelt_slot* slot) { return smelt_slab_live(pool, slot); }
EXPORT void harness_stats(void* pool, smelt_slab_stats* out) { smelt_slab_stats_get(pool, out); }
EXPORT uint64_t harness_made(void) { return made; }
EXPORT uint64_t harness_released(void) { return released; }
/* The next slab make is asked for fails, as when memory runs out. */
EXPORT void harness_refuse_next(void) { refuse_next = 1; }

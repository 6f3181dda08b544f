/*
 * slab.h: small buffers carved out of larger slabs, in portable C. Not part of the ABI.
 *
 * A backend whose buffers each cost a whole allocation of its own (Metal wraps whole pages, 16
 * KiB on Apple silicon) serves requests of up to SMELT_SLAB_MAX_SLOT bytes from slots of shared
 * slabs instead. Slot sizes are powers of two from SMELT_SLAB_MIN_SLOT up (one size class each),
 * every slab holds slots of one class, and a slot starts at a multiple of its size from the start
 * of its slab, so every slot is aligned to at least SMELT_SLAB_MIN_SLOT bytes.
 *
 * The pool only keeps the books: the backend makes and releases the slabs' memory through
 * smelt_slab_ops. Promises: a slot handed out reads as zero over all its bytes (a slot that was
 * used before is cleared through the CPU when it is handed out again, so slab memory must be
 * CPU-visible); a slot is handed out again only after smelt_slab_free returned it; a slab is
 * released as soon as its last slot is freed, and the rest at smelt_slab_pool_free. Not
 * thread-safe: the backend calls it from the one thread that owns the device.
 */
#ifndef SMELT_COMMON_SLAB_H
#define SMELT_COMMON_SLAB_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define SMELT_SLAB_PRIVATE __attribute__((visibility("hidden")))
#else
#define SMELT_SLAB_PRIVATE
#endif

/* 256 bytes satisfies every buffer-offset alignment Metal asks of an argument (constant buffers
 * on the strictest GPUs included). */
#define SMELT_SLAB_MIN_SLOT 256u
/* Requests above this get an allocation of their own; at 16 KiB pages the largest slot still
 * saves half a page. */
#define SMELT_SLAB_MAX_SLOT 8192u
#define SMELT_SLAB_CLASSES 6u /* 256, 512, 1024, 2048, 4096, 8192 */

typedef struct smelt_slab_ops {
  void* ctx;
  /* Zero-filled, CPU-visible memory of `bytes` bytes for a new slab, with the backend's object
   * for it in *owner; NULL when there is none to be had. */
  void* (*make)(void* ctx, uint64_t bytes, void** owner);
  /* Gives back a slab that no slot uses any more. */
  void (*release)(void* ctx, void* owner, void* memory, uint64_t bytes);
} smelt_slab_ops;

typedef struct smelt_slab smelt_slab;
typedef struct smelt_slab_pool smelt_slab_pool;

/* Where a slot lies. The backend keeps this with its buffer handle and hands it back to free it. */
typedef struct smelt_slot {
  smelt_slab* slab;
  void* owner;     /* the backend's object of the slab (from make) */
  uint8_t* memory; /* the slot's first byte */
  uint64_t offset; /* of the slot from the slab's start */
  uint64_t bytes;  /* the slot's size: its class, at least the length asked for */
} smelt_slot;

typedef struct smelt_slab_stats {
  uint64_t slabs;      /* live slabs */
  uint64_t slab_bytes; /* their memory */
  uint64_t slots;      /* slots handed out and not freed */
  uint64_t slot_bytes; /* their sizes */
} smelt_slab_stats;

/* A pool whose slabs are slab_bytes each: a multiple of SMELT_SLAB_MAX_SLOT (and of the page
 * size, for backends that wrap whole pages) and at most 2^32 bytes. NULL when slab_bytes is not
 * such a size or memory ran out. *ops is copied. */
SMELT_SLAB_PRIVATE smelt_slab_pool* smelt_slab_pool_new(const smelt_slab_ops* ops, uint64_t slab_bytes);
/* Releases every slab still held; slots of it must no longer be used. */
SMELT_SLAB_PRIVATE void smelt_slab_pool_free(smelt_slab_pool* pool);

/* The slot size a request of length bytes gets, or 0 when it is too large for a slot. */
SMELT_SLAB_PRIVATE uint64_t smelt_slab_slot_bytes(uint64_t length);

/* Hands out a zeroed slot of at least length bytes (length <= SMELT_SLAB_MAX_SLOT). Returns 0, or
 * -1 when length is too large, make found no memory, or the books could not grow. */
SMELT_SLAB_PRIVATE int smelt_slab_alloc(smelt_slab_pool* pool, uint64_t length, smelt_slot* out);
/* Returns a slot; the caller promises nothing uses its bytes any more. Releases its slab when it
 * was the slab's last slot. A slot of a live slab that is not handed out (freed twice) is
 * ignored; the slot's slab must not have been released. */
SMELT_SLAB_PRIVATE void smelt_slab_free(smelt_slab_pool* pool, const smelt_slot* slot);
/* 1 when slot is a slot of a live slab of this pool, handed out and not freed since; else 0.
 * Safe with a slot whose slab was released (the pointer is only compared). Walks every slab, so
 * meant for checks, not for every call. */
SMELT_SLAB_PRIVATE int smelt_slab_live(const smelt_slab_pool* pool, const smelt_slot* slot);

SMELT_SLAB_PRIVATE void smelt_slab_stats_get(const smelt_slab_pool* pool, smelt_slab_stats* out);

#ifdef __cplusplus
}
#endif

#endif /* SMELT_COMMON_SLAB_H */

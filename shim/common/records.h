/*
 * records.h: reading and checking the record stream of smelt_cmd_encode (layout in smelt.h),
 * written once in portable C for every backend. Not part of the ABI.
 *
 * The checks that depend only on the stream and on what a kernel declares live here, so every
 * backend refuses the same records with the same words. What only a backend can know (whether a
 * handle is one of its live objects, what a kernel declares, device limits of its own) it gives
 * through smelt_record_env.
 */
#ifndef SMELT_COMMON_RECORDS_H
#define SMELT_COMMON_RECORDS_H

#include <stddef.h>
#include <stdint.h>

#include "smelt.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define SMELT_COMMON_PRIVATE __attribute__((visibility("hidden")))
#else
#define SMELT_COMMON_PRIVATE
#endif

/* What a backend knows of a pipeline, for the checks of a dispatch. */
typedef struct smelt_kernel_facts {
  const char* name;                     /* the kernel function's name, for messages */
  uint32_t buffer_mask;                 /* [[buffer(i)]] slots that must be bound */
  uint32_t threadgroup_mask;            /* [[threadgroup(i)]] slots that need a length */
  uint32_t static_threadgroup_memory;   /* bytes declared in the kernel body, as far as known */
  uint32_t max_threads_per_threadgroup; /* of this pipeline */
} smelt_kernel_facts;

/* One decoded record. For a barrier only kind and at are meaningful. */
typedef struct smelt_dispatch {
  uint32_t kind; /* SMELT_REC_* */
  size_t at;     /* byte offset of the record in the stream, for messages */
  uint64_t pipeline;
  uint32_t size[3];
  uint32_t threadgroup[3];
  uint32_t nbindings;
  uint32_t ntgmem;
  smelt_binding bindings[SMELT_MAX_BUFFER_SLOTS];
  /* For a SMELT_BIND_BYTES binding i, its constant bytes inside the stream; NULL otherwise. */
  const uint8_t* bytes[SMELT_MAX_BUFFER_SLOTS];
  uint32_t tgmem[SMELT_MAX_THREADGROUP_SLOTS]; /* byte lengths as given (not rounded) */
} smelt_dispatch;

typedef struct smelt_record_env {
  void* ctx;
  /* Threadgroup memory one threadgroup may use, kernel declarations included. */
  uint32_t max_threadgroup_memory;
  /* Fills facts for pipeline when it is a live pipeline of this device and returns 0; else -1. */
  int (*pipeline)(void* ctx, uint64_t pipeline, smelt_kernel_facts* facts);
  /* The length of buffer when it is a live buffer of this device, returning 0; else -1. */
  int (*buffer)(void* ctx, uint64_t buffer, uint64_t* length);
  /* Optional: the backend's own checks of a dispatch that passed every common one. Returns 0, or
   * -1 with the reason (no prefix) in why. */
  int (*dispatch)(void* ctx, const smelt_dispatch* d, const smelt_kernel_facts* facts, char* why, size_t whylen);
} smelt_record_env;

/* Checks every record of the stream before anything is encoded. Returns 0, or -1 with the reason
 * in err: "record at byte N (kernel): ...". */
SMELT_COMMON_PRIVATE int smelt_records_check(const void* records, size_t length, const smelt_record_env* env,
                                             char* err, size_t errlen);

/* Reads the record at *at of a stream that smelt_records_check accepted into out and moves *at
 * past it. Returns 1 when it read one, 0 at the end of the stream. */
SMELT_COMMON_PRIVATE int smelt_records_next(const void* records, size_t length, size_t* at, smelt_dispatch* out);

/* Threadgroup memory a dispatch asks for besides the kernel's own: each length rounded up to 16
 * bytes, as Metal allocates it. */
SMELT_COMMON_PRIVATE uint64_t smelt_dispatch_threadgroup_bytes(const smelt_dispatch* d);

#ifdef __cplusplus
}
#endif

#endif /* SMELT_COMMON_RECORDS_H */

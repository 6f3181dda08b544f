/*
 * smelt.h: the one C ABI between smelt's TypeScript runtime and its GPU backends.
 *
 * Every backend (shim/metal on macOS, shim/host on the CPU) exports exactly the functions
 * declared here, and nothing else. The ABI is plain C: handles are opaque pointers, no function
 * returns memory that the caller frees, and every call that can fail writes a message into a
 * caller-owned buffer (err, errlen) and says so through its return value.
 *
 * Threading: a device and everything made from it may be used from one JS thread. Backends run
 * command buffers on threads of their own and never call back into the caller; completion is
 * published through a counter in shared memory (smelt_device_completion_counter) and through
 * the blocking smelt_cmd_wait.
 *
 * Errors of command buffers are sticky: a failed command buffer reports its device's error text
 * from its own smelt_cmd_wait and smelt_cmd_status. A failure that no wait or status has reported
 * yet is also reported once, as "command buffer #N failed: ...", by the next wait or status of
 * any other command buffer of the device, so that work depending on it does not pass silently.
 *
 * A device is lost once smelt_cmd_abandon gave up on one of its command buffers, and on Metal
 * once a command buffer failed (later passes wait on a fence it may never have updated): from
 * then on every call on it that would start or wait for work fails at once with the same text,
 * which begins "device lost:", and only freeing its objects and closing it remain useful. Open a
 * new device to go on.
 */
#ifndef SMELT_H
#define SMELT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SMELT_ABI_VERSION 2u

#if defined(__GNUC__) || defined(__clang__)
#define SMELT_API __attribute__((visibility("default")))
#else
#define SMELT_API
#endif

typedef struct smelt_device smelt_device;
typedef struct smelt_buffer smelt_buffer;
typedef struct smelt_library smelt_library;
typedef struct smelt_pipeline smelt_pipeline;
typedef struct smelt_cmd smelt_cmd;
typedef struct smelt_compile smelt_compile;

/* Return codes. Functions returning int return SMELT_OK or SMELT_ERROR unless they say otherwise;
 * functions returning a handle return NULL on failure. In both cases err holds the reason. */
#define SMELT_OK 0
#define SMELT_ERROR (-1)

/* Command buffer states, as returned by smelt_cmd_status and smelt_cmd_wait. */
#define SMELT_CMD_RECORDING 0 /* created, not committed */
#define SMELT_CMD_COMMITTED 1 /* committed, the device has not finished it */
#define SMELT_CMD_COMPLETED 2 /* the device finished every dispatch */
#define SMELT_CMD_TIMEOUT 3   /* smelt_cmd_wait only: the timeout passed first */
/* a failed command buffer reports SMELT_ERROR with the device's text in err */

/* Record kinds of the packed dispatch stream given to smelt_cmd_encode. */
#define SMELT_REC_DISPATCH_THREADS 1      /* size = threads in the grid (non-uniform edges allowed) */
#define SMELT_REC_DISPATCH_THREADGROUPS 2 /* size = threadgroups in the grid */
#define SMELT_REC_BARRIER 3               /* later dispatches see every write of earlier ones */

/* Binding kinds. */
#define SMELT_BIND_BUFFER 1 /* a device buffer at a byte offset */
#define SMELT_BIND_BYTES 2  /* constant bytes copied at encode time (Metal's setBytes, at most 4096) */

/* Metal's fixed limits, enforced by every backend so that a kernel that runs on one runs on all. */
#define SMELT_MAX_BUFFER_SLOTS 31u
#define SMELT_MAX_THREADGROUP_SLOTS 31u /* [[threadgroup(0)]]..[[threadgroup(30)]] */
#define SMELT_MAX_BYTES_BINDING 4096u
#define SMELT_MAX_THREADGROUP_MEMORY 32768u
#define SMELT_MAX_THREADS_PER_THREADGROUP 1024u
/* Command buffers of one device holding dispatches not yet committed: Metal's queue blocks the
 * caller, forever, past its limit of unfinished ones; every backend refuses the next encode. */
#define SMELT_MAX_OPEN_COMMAND_BUFFERS 255u

typedef struct smelt_limits {
  uint64_t max_buffer_length;           /* bytes */
  uint32_t max_threads_per_threadgroup; /* 1024 on Apple silicon */
  uint32_t max_threadgroup_memory;      /* bytes, 32768 on Apple silicon */
  uint32_t max_buffer_slots;            /* 31 */
  uint32_t simd_width;                  /* 32 */
  uint32_t unified_memory;              /* 1 when the CPU and the device share memory */
  uint32_t host_visible;                /* 1 when smelt_buffer_contents gives the buffers' memory */
} smelt_limits;

typedef struct smelt_pipeline_info {
  uint32_t max_threads_per_threadgroup;
  uint32_t thread_execution_width;
  uint32_t static_threadgroup_memory; /* bytes declared in the kernel body, as far as known */
  uint32_t buffer_mask;               /* bit i set: the kernel has a [[buffer(i)]] argument */
  uint32_t threadgroup_mask;          /* bit i set: the kernel has a [[threadgroup(i)]] argument */
  uint32_t reserved;
} smelt_pipeline_info;

/* Live object counts (for leak checks) and library compilation counters of one device. */
typedef struct smelt_device_stats {
  uint64_t buffers;         /* live */
  uint64_t buffer_bytes;    /* live */
  uint64_t libraries;       /* live */
  uint64_t pipelines;       /* live */
  uint64_t command_buffers; /* live */
  uint64_t compiles;        /* libraries compiled from source since the device opened */
  uint64_t cache_hits;      /* libraries loaded from a compiled-kernel cache instead */
} smelt_device_stats;

/*
 * One record of the packed stream given to smelt_cmd_encode. Records follow each other; each
 * starts on an 8-byte boundary and is record_bytes long. After the header come nbindings
 * smelt_binding entries, then ntgmem uint32_t threadgroup memory lengths ([[threadgroup(i)]] for
 * i = 0..ntgmem-1), padded to 8 bytes, then the constant bytes that SMELT_BIND_BYTES bindings
 * point into. All integers are little-endian.
 */
typedef struct smelt_record {
  uint32_t kind;         /* SMELT_REC_* */
  uint32_t record_bytes; /* whole record, header included, a multiple of 8 */
  uint64_t pipeline;     /* (uintptr_t) smelt_pipeline*; 0 for a barrier */
  uint32_t size[3];      /* threads or threadgroups, per kind */
  uint32_t threadgroup[3];
  uint32_t nbindings;
  uint32_t ntgmem;
} smelt_record; /* 48 bytes */

typedef struct smelt_binding {
  uint32_t index; /* [[buffer(index)]] */
  uint32_t kind;  /* SMELT_BIND_* */
  uint64_t a;     /* BUFFER: (uintptr_t) smelt_buffer*; BYTES: offset of the bytes from the record start */
  uint64_t b;     /* BUFFER: byte offset into the buffer; BYTES: length in bytes */
} smelt_binding; /* 24 bytes */

/* ABI and backend identity. */
SMELT_API uint32_t smelt_abi_version(void);
SMELT_API const char* smelt_backend_name(void); /* static string: "metal" or "host" */

/* Device. options: "key=value;key=value". Every backend accepts every key below and ignores the
 * ones that mean nothing to it; any other key is an error.
 *   threads=N       host: worker threads (default: the number of cores)
 *   debug=0|1       host: bounds-checked buffer access; metal: object counting and validation
 *   cache=DIR       host: directory of the compiled-kernel cache; metal: binary archives of pipelines
 *   cxx=CMD ARGS    host: C++ compiler command, gcc-style flags (e.g. "zig cc", "g++")
 *   include=DIR     host: directory holding the metal_stdlib compatibility header
 *   commit_every=N  metal: commit the encoder's work to the GPU every N dispatches
 *   host_visible=0  host: act like a discrete GPU (contents NULL, host_visible 0) to test the
 *                   copy paths of smelt_buffer_write and smelt_buffer_read */
SMELT_API smelt_device* smelt_device_open(const char* options, char* err, size_t errlen);
/* Runs what was committed, then closes. A lost device returns at once: the thread stuck in a
 * runaway kernel cannot be stopped, so it and the device's memory are deliberately leaked. */
SMELT_API void smelt_device_close(smelt_device* dev);
SMELT_API int smelt_device_name(smelt_device* dev, char* out, size_t outlen);
SMELT_API int smelt_device_limits(smelt_device* dev, smelt_limits* out);
SMELT_API int smelt_device_stats_get(smelt_device* dev, smelt_device_stats* out);
/* Number of command buffers that have finished (completed or failed), in memory the caller may
 * read at any time; it only grows. Valid until the device is closed. */
SMELT_API const volatile uint64_t* smelt_device_completion_counter(smelt_device* dev);

/* Buffers: zero-filled device memory. Where smelt_limits.host_visible is 1, contents is the memory
 * the device uses (on Metal page-aligned, or 256-byte aligned for buffers of up to 8 KiB, which are
 * slots of shared slabs; the host backend starts buffers of 1 MiB or more
 * 256 * (0..15) bytes into their first page, in turn, so that streams between them do not alias
 * within 4 KiB pages). Where it is 0 (a discrete GPU), contents returns NULL and only
 * smelt_buffer_write and smelt_buffer_read reach the bytes. */
SMELT_API smelt_buffer* smelt_buffer_new(smelt_device* dev, uint64_t length, char* err, size_t errlen);
SMELT_API void* smelt_buffer_contents(smelt_buffer* buf);
SMELT_API uint64_t smelt_buffer_length(smelt_buffer* buf);
SMELT_API void smelt_buffer_free(smelt_buffer* buf);
/* Copy length bytes into or out of the buffer at a byte offset; offset + length must lie within
 * the buffer. They do not wait for command buffers: wait for those that use the bytes first. */
SMELT_API int smelt_buffer_write(smelt_buffer* buf, uint64_t offset, const void* src, uint64_t length, char* err,
                                 size_t errlen);
SMELT_API int smelt_buffer_read(smelt_buffer* buf, uint64_t offset, void* dst, uint64_t length, char* err,
                                size_t errlen);
/* A buffer over length bytes at memory that the caller owns (weights, a memory-mapped file).
 * Without a copy where the backend can (host: always; Metal: when memory is page-aligned, else
 * the bytes are copied at this call). Where there is no copy, the device reads and writes that
 * memory, and the caller keeps it mapped until the buffer is freed and every command buffer
 * using it finished; kernels must not write memory mapped read-only. */
SMELT_API smelt_buffer* smelt_buffer_wrap(smelt_device* dev, void* memory, uint64_t length, char* err,
                                          size_t errlen);

/* Libraries from MSL source. options: "fast_math=0|1". On failure err holds the compiler's
 * messages, with line numbers of the MSL source. */
SMELT_API smelt_library* smelt_library_new(smelt_device* dev, const char* source, size_t source_len,
                                           const char* options, char* err, size_t errlen);
SMELT_API void smelt_library_free(smelt_library* lib);
/* The same compilation, off the calling thread: returns at once with a job that a native thread
 * (or Metal) completes. Poll it with smelt_compile_done (1 when finished), then take the result
 * with smelt_compile_finish, which waits if it has not finished, frees the job, and returns the
 * library or NULL with the compiler's messages in err. Every job is finished, once, before its
 * device is closed. Nothing is called back. */
SMELT_API smelt_compile* smelt_library_new_async(smelt_device* dev, const char* source, size_t source_len,
                                                 const char* options, char* err, size_t errlen);
SMELT_API int smelt_compile_done(smelt_compile* job);
SMELT_API smelt_library* smelt_compile_finish(smelt_compile* job, char* err, size_t errlen);
SMELT_API smelt_pipeline* smelt_pipeline_new(smelt_library* lib, const char* function_name, char* err,
                                             size_t errlen);
SMELT_API int smelt_pipeline_info_get(smelt_pipeline* pipe, smelt_pipeline_info* out);
SMELT_API void smelt_pipeline_free(smelt_pipeline* pipe);

/* Command buffers. A command buffer is encoded, committed once, then waited on or polled. */
SMELT_API smelt_cmd* smelt_cmd_new(smelt_device* dev, char* err, size_t errlen);
SMELT_API int smelt_cmd_encode(smelt_cmd* cmd, const void* records, size_t length, char* err, size_t errlen);
/* Returns the sequence number of the command buffer (1, 2, ...): it has finished once the
 * completion counter reaches it. Returns 0 on failure. */
SMELT_API uint64_t smelt_cmd_commit(smelt_cmd* cmd, char* err, size_t errlen);
SMELT_API int smelt_cmd_status(smelt_cmd* cmd, char* err, size_t errlen);
/* Blocks until the command buffer finishes or timeout_ms passes (0 waits without limit). */
SMELT_API int smelt_cmd_wait(smelt_cmd* cmd, uint64_t timeout_ms, char* err, size_t errlen);
/* Gives up on a committed command buffer that has not finished (after a wait timed out): a kernel
 * cannot be stopped safely, so the device is marked lost with a text naming the command buffer
 * and its kernel, work queued behind it is dropped, and every waiter returns that error. Returns
 * SMELT_OK with nothing done when the command buffer already finished, else SMELT_ERROR with the
 * lost text in err. */
SMELT_API int smelt_cmd_abandon(smelt_cmd* cmd, char* err, size_t errlen);
/* Frees the command buffer; one still running is waited for first, except on a lost device,
 * where the runaway one is left to its thread (its memory is kept, never freed). */
SMELT_API void smelt_cmd_free(smelt_cmd* cmd);

#ifdef __cplusplus
}
#endif

#endif /* SMELT_H */

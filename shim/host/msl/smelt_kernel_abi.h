/*
 * The interface between shim/host's runtime and the native modules it compiles from MSL.
 *
 * Included by the runtime (the .cpp files of shim/host) and, through metal_stdlib, by every translated
 * kernel module. Plain C layout, no includes: kernel modules are compiled without any C or C++
 * library headers so that nothing in them can clash with the MSL names they define.
 */
#ifndef __SMELT_KERNEL_ABI_H
#define __SMELT_KERNEL_ABI_H

#define __SMELT_KERNEL_ABI_VERSION 1u
#define __SMELT_SIMD_WIDTH 32u
#define __SMELT_SIMD_SLOT_BYTES 64u /* one lane's value in a SIMD-group exchange */

/* What an out-of-bounds access did, as far as the checked pointer can tell. */
#define __SMELT_ACCESS_READ 0
#define __SMELT_ACCESS_READ_OR_WRITE 1

#ifdef __cplusplus
extern "C" {
#endif

/* What a kernel module may ask of the runtime. All calls come from the worker thread running the
 * current threadgroup, from inside the fiber of the calling GPU thread. */
typedef struct __smelt_hk_api {
  void (*threadgroup_barrier)(void);
  void (*simdgroup_barrier)(void);
  /* This SIMD-group's exchange area: __SMELT_SIMD_WIDTH slots of __SMELT_SIMD_SLOT_BYTES. */
  void* (*simd_slots)(void);
  unsigned (*simd_lane)(void);
  /* Lanes that took part in the last exchange of this SIMD-group (bit i: lane i). */
  unsigned (*simd_active_mask)(void);
  /* Debug builds: an access outside a bound buffer, of one of the SMELT_ACCESS_ kinds. */
  void (*out_of_bounds)(unsigned slot, unsigned long long index, unsigned long long count, int access);
  /* Bytes of threadgroup memory the kernel has declared so far, reported at each declaration. */
  void (*threadgroup_static_bytes)(unsigned long long bytes);
} __smelt_hk_api;

/* The position attributes of one GPU thread, as Metal defines them. */
typedef struct __smelt_hk_thread {
  unsigned tpig[3];  /* thread_position_in_grid */
  unsigned tpitg[3]; /* thread_position_in_threadgroup */
  unsigned tgpig[3]; /* threadgroup_position_in_grid */
  unsigned tptg[3];  /* threads_per_threadgroup (this threadgroup's own size) */
  unsigned tpg[3];   /* threads_per_grid */
  unsigned tgpg[3];  /* threadgroups_per_grid */
  unsigned tiitg;    /* thread_index_in_threadgroup */
  unsigned lane;     /* thread_index_in_simdgroup */
  unsigned sgitg;    /* simdgroup_index_in_threadgroup */
  unsigned sgptg;    /* simdgroups_per_threadgroup */
} __smelt_hk_thread;

/* The shape of one dispatch. */
typedef struct __smelt_hk_grid {
  unsigned threads[3];     /* threads in the grid (uniform dispatches: groups * group) */
  unsigned group[3];       /* nominal threadgroup size */
  unsigned groups[3];      /* threadgroups in the grid */
  unsigned reserved;
} __smelt_hk_grid;

/* The bindings of one dispatch. */
typedef struct __smelt_hk_launch {
  void* buffers[31];
  unsigned long long lengths[31]; /* bytes from the bound pointer to the end of the buffer */
  void* threadgroup[31];
  const __smelt_hk_grid* grid;
} __smelt_hk_launch;

/* The position attributes of thread `local` (0 .. threads in the group - 1) of threadgroup
 * `group` (linear, x fastest). Shared by the runtime (fibers) and kernel modules (plain loops). */
static inline unsigned __smelt_hk_group_threads(const __smelt_hk_grid* g, unsigned group, __smelt_hk_thread* t) {
  unsigned gx = group % g->groups[0], gy = (group / g->groups[0]) % g->groups[1];
  unsigned gz = group / (g->groups[0] * g->groups[1]);
  unsigned pos[3] = {gx, gy, gz};
  unsigned n = 1;
  for (int d = 0; d < 3; ++d) {
    unsigned start = pos[d] * g->group[d];
    unsigned left = g->threads[d] - start;
    t->tgpig[d] = pos[d];
    t->tptg[d] = left < g->group[d] ? left : g->group[d];
    t->tpg[d] = g->threads[d];
    t->tgpg[d] = g->groups[d];
    n *= t->tptg[d];
  }
  t->sgptg = (n + __SMELT_SIMD_WIDTH - 1) / __SMELT_SIMD_WIDTH;
  return n;
}
static inline void __smelt_hk_thread_at(const __smelt_hk_grid* g, __smelt_hk_thread* t, unsigned local) {
  unsigned x = local % t->tptg[0], rest = local / t->tptg[0];
  unsigned y = rest % t->tptg[1], z = rest / t->tptg[1];
  t->tpitg[0] = x;
  t->tpitg[1] = y;
  t->tpitg[2] = z;
  t->tpig[0] = t->tgpig[0] * g->group[0] + x;
  t->tpig[1] = t->tgpig[1] * g->group[1] + y;
  t->tpig[2] = t->tgpig[2] * g->group[2] + z;
  t->tiitg = local;
  t->lane = local % __SMELT_SIMD_WIDTH;
  t->sgitg = local / __SMELT_SIMD_WIDTH;
}

/* Per kernel (host name H), a module exports:
 *   void __smelt_kthread_H(const __smelt_hk_launch*, const __smelt_hk_thread*)  runs one thread
 *   void __smelt_kloop_H(const __smelt_hk_launch*, unsigned first, unsigned end)
 *        runs every thread of threadgroups [first, end) in order (kernels without barriers or
 *        SIMD-group functions only)
 * and once per module:
 *   void __smelt_module_init(const __smelt_hk_api*)
 */
typedef void (*__smelt_hk_thread_fn)(const __smelt_hk_launch*, const __smelt_hk_thread*);
typedef void (*__smelt_hk_loop_fn)(const __smelt_hk_launch*, unsigned, unsigned);
typedef void (*__smelt_hk_init_fn)(const __smelt_hk_api*);

#ifdef __cplusplus
}
#endif

#endif

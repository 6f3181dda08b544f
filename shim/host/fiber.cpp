// Fibers for the host backend. The threads of a threadgroup that waits at barriers or exchanges
// values between SIMD lanes run as fibers on one OS thread: each runs until it reaches a barrier,
// and a barrier opens once every thread that can still reach it has arrived. Switching is a few
// instructions of assembly (callee-saved registers and the stack pointer), no system call.
#include <sys/mman.h>

#include <cstring>
#include <string>

#include "host.h"

extern "C" void smelt_fiber_switch(void** save_sp, void* next_sp);
extern "C" void smelt_fiber_entry(void);

// The switch routines are private to the library: hidden (ELF) or private extern (Mach-O).
#if defined(__APPLE__)
#define SMELT_SYM(name) "_" #name
#define SMELT_FUNC_TYPE(name) ".private_extern _" #name "\n"
#else
#define SMELT_SYM(name) #name
#define SMELT_FUNC_TYPE(name) ".type " #name ",@function\n.hidden " #name "\n"
#endif

#if defined(__x86_64__)
// Saves rbp rbx r12-r15 and the SSE/x87 control words on the current stack, stores the stack
// pointer at *save_sp, and resumes the fiber whose stack pointer is next_sp.
asm(".text\n"
    ".p2align 4\n"
    ".globl " SMELT_SYM(smelt_fiber_switch) "\n" SMELT_FUNC_TYPE(smelt_fiber_switch)
    SMELT_SYM(smelt_fiber_switch) ":\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  subq $8, %rsp\n  stmxcsr (%rsp)\n  fnstcw 4(%rsp)\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  ldmxcsr (%rsp)\n  fldcw 4(%rsp)\n  addq $8, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
    "  ret\n"
    ".globl " SMELT_SYM(smelt_fiber_entry) "\n" SMELT_FUNC_TYPE(smelt_fiber_entry)
    SMELT_SYM(smelt_fiber_entry) ":\n"
    "  movq %r12, %rdi\n"
    "  call " SMELT_SYM(smelt_fiber_main) "\n"
    "  ud2\n");
static constexpr size_t kFrameBytes = 64;  // control words + 6 registers + return address
static void init_frame(void** sp, void* fiber) {
  uint32_t* csr = (uint32_t*)sp;
  csr[0] = 0x1f80;  // MXCSR: all exceptions masked, round to nearest
  csr[1] = 0x037f;  // x87 control word
  sp[1] = nullptr;  // r15
  sp[2] = nullptr;  // r14
  sp[3] = nullptr;  // r13
  sp[4] = fiber;    // r12: the argument smelt_fiber_entry passes on
  sp[5] = nullptr;  // rbx
  sp[6] = nullptr;  // rbp
  sp[7] = (void*)&smelt_fiber_entry;
}
#elif defined(__aarch64__)
// Saves x19-x30 and d8-d15, as AAPCS64 requires of a callee.
asm(".text\n"
    ".p2align 4\n"
    ".globl " SMELT_SYM(smelt_fiber_switch) "\n" SMELT_FUNC_TYPE(smelt_fiber_switch)
    SMELT_SYM(smelt_fiber_switch) ":\n"
    "  sub sp, sp, #176\n"
    "  stp x19, x20, [sp, #0]\n  stp x21, x22, [sp, #16]\n  stp x23, x24, [sp, #32]\n"
    "  stp x25, x26, [sp, #48]\n  stp x27, x28, [sp, #64]\n  stp x29, x30, [sp, #80]\n"
    "  stp d8, d9, [sp, #96]\n  stp d10, d11, [sp, #112]\n  stp d12, d13, [sp, #128]\n  stp d14, d15, [sp, #144]\n"
    "  mov x9, sp\n  str x9, [x0]\n"
    "  mov sp, x1\n"
    "  ldp x19, x20, [sp, #0]\n  ldp x21, x22, [sp, #16]\n  ldp x23, x24, [sp, #32]\n"
    "  ldp x25, x26, [sp, #48]\n  ldp x27, x28, [sp, #64]\n  ldp x29, x30, [sp, #80]\n"
    "  ldp d8, d9, [sp, #96]\n  ldp d10, d11, [sp, #112]\n  ldp d12, d13, [sp, #128]\n  ldp d14, d15, [sp, #144]\n"
    "  add sp, sp, #176\n"
    "  ret\n"
    ".globl " SMELT_SYM(smelt_fiber_entry) "\n" SMELT_FUNC_TYPE(smelt_fiber_entry)
    SMELT_SYM(smelt_fiber_entry) ":\n"
    "  mov x0, x19\n"
    "  bl " SMELT_SYM(smelt_fiber_main) "\n"
    "  brk #0\n");
static constexpr size_t kFrameBytes = 176;
static void init_frame(void** sp, void* fiber) {
  std::memset(sp, 0, kFrameBytes);
  sp[0] = fiber;                       // x19: the argument smelt_fiber_entry passes on
  sp[11] = (void*)&smelt_fiber_entry;  // x30: where ret goes
}
#else
#error "the host backend's fibers support x86_64 and aarch64"
#endif

namespace smelt_host {
namespace {

constexpr size_t kStackBytes = 128 * 1024;
constexpr size_t kGuardBytes = 4096;
constexpr unsigned kMaxThreads = SMELT_MAX_THREADS_PER_THREADGROUP;
constexpr unsigned kMaxSimdgroups = kMaxThreads / __SMELT_SIMD_WIDTH;

enum FiberState : uint8_t { kReady, kAtBarrier, kAtSimdBarrier, kDone };

struct Fiber {
  void* sp;
  FiberState state;
};

}  // namespace

struct ThreadgroupRunner::State {
  char* stacks = nullptr;  // kMaxThreads stacks, each below a guard page
  size_t stacks_bytes = 0;
  Fiber fibers[kMaxThreads];
  __smelt_hk_thread threads[kMaxThreads];
  void* scheduler_sp = nullptr;
  Fiber* current = nullptr;
  __smelt_hk_thread_fn fn = nullptr;
  const __smelt_hk_launch* launch = nullptr;

  unsigned alive = 0, at_barrier = 0;
  unsigned simd_alive[kMaxSimdgroups], simd_waiting[kMaxSimdgroups];
  unsigned simd_arrived[kMaxSimdgroups], simd_active[kMaxSimdgroups];
  alignas(64) char slots[kMaxSimdgroups * __SMELT_SIMD_WIDTH * __SMELT_SIMD_SLOT_BYTES];

  unsigned index(const Fiber* f) const { return unsigned(f - fibers); }
  void yield(Fiber* f) { smelt_fiber_switch(&f->sp, scheduler_sp); }
  void release_simdgroup(unsigned sg) {
    simd_active[sg] = simd_arrived[sg];
    for (unsigned l = 0; l < __SMELT_SIMD_WIDTH; ++l)
      if ((simd_arrived[sg] >> l) & 1u) fibers[sg * __SMELT_SIMD_WIDTH + l].state = kReady;
    simd_waiting[sg] = 0;
    simd_arrived[sg] = 0;
  }
};

namespace {
thread_local ThreadgroupRunner::State* t_state = nullptr;

void api_threadgroup_barrier() {
  ThreadgroupRunner::State* s = t_state;
  Fiber* f = s->current;
  f->state = kAtBarrier;
  ++s->at_barrier;
  s->yield(f);
}
void api_simdgroup_barrier() {
  ThreadgroupRunner::State* s = t_state;
  Fiber* f = s->current;
  unsigned i = s->index(f), sg = i / __SMELT_SIMD_WIDTH;
  f->state = kAtSimdBarrier;
  ++s->simd_waiting[sg];
  s->simd_arrived[sg] |= 1u << (i % __SMELT_SIMD_WIDTH);
  s->yield(f);
}
void* api_simd_slots() {
  ThreadgroupRunner::State* s = t_state;
  unsigned sg = s->index(s->current) / __SMELT_SIMD_WIDTH;
  return s->slots + size_t(sg) * __SMELT_SIMD_WIDTH * __SMELT_SIMD_SLOT_BYTES;
}
unsigned api_simd_lane() { return t_state->index(t_state->current) % __SMELT_SIMD_WIDTH; }
unsigned api_simd_active_mask() {
  ThreadgroupRunner::State* s = t_state;
  return s->simd_active[s->index(s->current) / __SMELT_SIMD_WIDTH];
}

thread_local DispatchContext t_dispatch;
std::atomic<int> g_running_dispatches{0};  // threads with a dispatch context set
std::mutex g_fault_mutex;

void api_out_of_bounds(unsigned slot, unsigned long long index, unsigned long long count, int access) {
  if (!t_dispatch.cmd) return;
  std::lock_guard<std::mutex> lock(g_fault_mutex);
  if (!t_dispatch.cmd->error.empty()) return;
  const char* kind = access == __SMELT_ACCESS_READ ? "read of" : "read or write of";
  std::string what = count == 0 && index == 0
                         ? "buffer(" + std::to_string(slot) + ") is smaller than the type bound to it"
                         : std::string(kind) + " element " +
                               std::to_string((long long)index) + " of buffer(" + std::to_string(slot) +
                               "), which holds " + std::to_string(count) + " elements";
  t_dispatch.cmd->error = "kernel '" + t_dispatch.code->info.name + "': out-of-bounds " + what +
                          " (caught by SMELT_HOST_DEBUG; the access was discarded)";
}

void api_threadgroup_static_bytes(unsigned long long bytes) {
  const KernelCode* code = t_dispatch.code;
  if (code && bytes > code->static_threadgroup.load(std::memory_order_relaxed))
    code->static_threadgroup.store(uint32_t(bytes), std::memory_order_relaxed);
}

const __smelt_hk_api g_api = {api_threadgroup_barrier, api_simdgroup_barrier, api_simd_slots,
                            api_simd_lane,           api_simd_active_mask,  api_out_of_bounds,
                            api_threadgroup_static_bytes};
}  // namespace

const __smelt_hk_api* kernel_api() { return &g_api; }

void set_dispatch_context(smelt_cmd* cmd, const KernelCode* code, const __smelt_hk_launch* launch) {
  if (cmd && !t_dispatch.cmd) g_running_dispatches.fetch_add(1, std::memory_order_relaxed);
  if (!cmd && t_dispatch.cmd) g_running_dispatches.fetch_sub(1, std::memory_order_relaxed);
  t_dispatch.cmd = cmd;
  t_dispatch.code = code;
  t_dispatch.launch = launch;
}

const DispatchContext* running_dispatch() {
  return g_running_dispatches.load(std::memory_order_relaxed) ? &t_dispatch : nullptr;
}

ThreadgroupRunner::ThreadgroupRunner() : s_(new State()) {
  s_->stacks_bytes = size_t(kMaxThreads) * (kStackBytes + kGuardBytes);
  void* m = mmap(nullptr, s_->stacks_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) return;
  s_->stacks = (char*)m;
  // A guard page below each stack turns an overflow into a crash instead of silent corruption.
  for (unsigned i = 0; i < kMaxThreads; ++i) mprotect(s_->stacks + size_t(i) * (kStackBytes + kGuardBytes), kGuardBytes, PROT_NONE);
}

ThreadgroupRunner::~ThreadgroupRunner() {
  if (s_->stacks) munmap(s_->stacks, s_->stacks_bytes);
}

void ThreadgroupRunner::run(__smelt_hk_thread_fn fn, const __smelt_hk_launch* launch, unsigned group) {
  State& s = *s_;
  if (!s.stacks) return;
  t_state = &s;
  s.fn = fn;
  s.launch = launch;
  unsigned n = __smelt_hk_group_threads(launch->grid, group, &s.threads[0]);
  unsigned simdgroups = (n + __SMELT_SIMD_WIDTH - 1) / __SMELT_SIMD_WIDTH;
  for (unsigned i = 0; i < n; ++i) {
    if (i) s.threads[i] = s.threads[0];
    __smelt_hk_thread_at(launch->grid, &s.threads[i], i);
    char* top = s.stacks + size_t(i + 1) * (kStackBytes + kGuardBytes);
    void** sp = (void**)(top - 16 - kFrameBytes);
    init_frame(sp, &s.fibers[i]);
    s.fibers[i].sp = sp;
    s.fibers[i].state = kReady;
  }
  for (unsigned g = 0; g < simdgroups; ++g) {
    unsigned lanes = n - g * __SMELT_SIMD_WIDTH;
    s.simd_alive[g] = lanes < __SMELT_SIMD_WIDTH ? lanes : __SMELT_SIMD_WIDTH;
    s.simd_waiting[g] = 0;
    s.simd_arrived[g] = 0;
    s.simd_active[g] = 0;
  }
  s.alive = n;
  s.at_barrier = 0;
  for (;;) {
    for (unsigned i = 0; i < n; ++i) {
      if (s.fibers[i].state != kReady) continue;
      s.current = &s.fibers[i];
      smelt_fiber_switch(&s.scheduler_sp, s.fibers[i].sp);
    }
    if (s.alive == 0) break;
    if (s.at_barrier == s.alive) {
      for (unsigned i = 0; i < n; ++i)
        if (s.fibers[i].state == kAtBarrier) s.fibers[i].state = kReady;
      s.at_barrier = 0;
      continue;
    }
    // A SIMD-group exchange opens when every live lane of the group has arrived; if nothing else
    // can move, the lanes that did arrive go ahead alone, as the active lanes of divergent code.
    bool released = false;
    for (unsigned g = 0; g < simdgroups; ++g)
      if (s.simd_waiting[g] && s.simd_waiting[g] == s.simd_alive[g]) {
        s.release_simdgroup(g);
        released = true;
      }
    if (!released)
      for (unsigned g = 0; g < simdgroups; ++g)
        if (s.simd_waiting[g]) s.release_simdgroup(g);
  }
  t_state = nullptr;
}

}  // namespace smelt_host

// Where every fiber starts: runs its GPU thread, then hands control back for good.
extern "C" __attribute__((used)) void smelt_fiber_main(smelt_host::Fiber* f) {
  smelt_host::ThreadgroupRunner::State* s = smelt_host::t_state;
  unsigned i = s->index(f);
  s->fn(s->launch, &s->threads[i]);
  f->state = smelt_host::kDone;
  --s->alive;
  --s->simd_alive[i / __SMELT_SIMD_WIDTH];
  smelt_fiber_switch(&f->sp, s->scheduler_sp);
  __builtin_trap();
}

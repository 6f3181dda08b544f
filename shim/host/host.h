// Internal types of the host backend, shared by its modules:
//   abi.cpp       the exported smelt.h functions: validation and bookkeeping
//   translate.cpp MSL to C++
//   compiler.cpp  C++ to a loaded native module, with the on-disk cache
//   executor.cpp  the queue of command buffers and the worker pool that runs dispatches
//   fiber.cpp     fibers, and the scheduler that runs one threadgroup with exact barriers
//   fault.cpp     names the kernel that ran into a buffer's guard page
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

#include "../common/abi_common.h"
#include "msl/smelt_kernel_abi.h"
#include "smelt.h"
#include "translate.h"

namespace smelt_host {

using Options = smelt_common::DeviceOptions;

// A loaded kernel module; unloaded when the last library or pipeline using it goes.
struct Module {
  void* handle = nullptr;
  ~Module();
};

struct KernelCode {
  std::shared_ptr<Module> module;
  KernelInfo info;
  __smelt_hk_thread_fn thread_fn = nullptr;
  __smelt_hk_loop_fn loop_fn = nullptr;  // only for kernels that run without fibers
  // Threadgroup memory declared in the kernel body: known once the kernel has run.
  mutable std::atomic<uint32_t> static_threadgroup{0};
};

// One encoded dispatch or barrier, with everything it needs copied or retained.
struct Dispatch {
  bool barrier = false;
  std::shared_ptr<const KernelCode> code;
  __smelt_hk_grid grid{};
  smelt_buffer* buffers[31] = {};  // retained until the command buffer finishes
  uint64_t offsets[31] = {};
  int bytes_at[31];                // offset into bytes, or -1
  uint64_t bytes_len[31] = {};
  std::vector<uint64_t> bytes;     // constant bytes, 8-byte aligned
  uint32_t tgmem[31] = {};
  uint32_t ntgmem = 0;
};

class Executor;

}  // namespace smelt_host

struct smelt_device {
  smelt_host::Options options;
  std::string header_hash;  // of the compatibility headers, part of every cache key
  std::unique_ptr<smelt_host::Executor> executor;
  volatile uint64_t* completion = nullptr;  // page shared with the caller
  std::atomic<uint64_t> next_sequence{0};
  // Set once by smelt_cmd_abandon, after lost_text, which never changes again.
  std::atomic<bool> lost{false};
  std::string lost_text;

  std::mutex live_mutex;  // guards the live sets and counters below
  std::unordered_set<const smelt_buffer*> buffers;
  std::unordered_set<const smelt_pipeline*> pipelines;
  uint64_t buffer_bytes = 0, libraries = 0, command_buffers = 0, compiles = 0, cache_hits = 0;
  uint32_t open_command_buffers = 0;  // smelt_cmds holding uncommitted dispatches
};

struct smelt_buffer {
  smelt_device* dev;
  void* memory;     // the contents, inside `mapping` (smelt_buffer_new says where)
  uint64_t length;  // as requested
  void* mapping;    // null for a wrapped buffer: the caller owns the memory
  size_t mapped;    // page-rounded, at least one page, and the guard page after it
  std::atomic<int> refs{1};
};

struct smelt_library {
  smelt_device* dev;
  std::shared_ptr<smelt_host::Module> module;
  std::vector<smelt_host::KernelInfo> kernels;
};

struct smelt_pipeline {
  smelt_device* dev;
  std::shared_ptr<const smelt_host::KernelCode> code;
};

struct smelt_cmd {
  smelt_device* dev;
  std::vector<smelt_host::Dispatch> items;
  int state = SMELT_CMD_RECORDING;  // guarded by the executor's mutex once committed
  std::string error;                // first failure, sticky
  uint64_t sequence = 0;
  bool open = false;  // holds dispatches and is not committed: counts toward open_command_buffers
};

namespace smelt_host {

void buffer_retain(smelt_buffer* b);
void buffer_release(smelt_buffer* b);

// Runs committed command buffers in order, on a thread of its own or on a thread waiting for
// them, spreading each dispatch's threadgroups over a pool of workers.
class Executor {
 public:
  Executor(smelt_device* dev, unsigned threads);
  ~Executor();
  void submit(smelt_cmd* cmd);
  // SMELT_CMD_COMPLETED, SMELT_CMD_TIMEOUT or SMELT_ERROR with the message in error: this
  // command buffer's failure, or another's that no wait has reported yet (smelt.h).
  int wait(smelt_cmd* cmd, uint64_t timeout_ms, std::string& error);
  int status(smelt_cmd* cmd, std::string& error);
  // smelt_cmd_abandon: SMELT_OK when cmd already finished, else marks the device lost, drops
  // the queue, wakes every waiter, and returns SMELT_ERROR with the lost text in error.
  int abandon(smelt_cmd* cmd, std::string& error);
  // True when the executor no longer refers to cmd (finished, or dropped from the queue).
  bool released(smelt_cmd* cmd);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Fibers: one threadgroup's threads on one OS thread, switching at barriers.
class ThreadgroupRunner {
 public:
  ThreadgroupRunner();
  ~ThreadgroupRunner();
  ThreadgroupRunner(const ThreadgroupRunner&) = delete;
  ThreadgroupRunner& operator=(const ThreadgroupRunner&) = delete;
  void run(__smelt_hk_thread_fn fn, const __smelt_hk_launch* launch, unsigned group);

  struct State;

 private:
  std::unique_ptr<State> s_;
};

// The table of runtime functions given to every kernel module.
const __smelt_hk_api* kernel_api();
// The dispatch a worker thread is running, for what kernels report through kernel_api() and for
// naming the kernel when it faults.
struct DispatchContext {
  smelt_cmd* cmd = nullptr;
  const KernelCode* code = nullptr;
  const __smelt_hk_launch* launch = nullptr;
};
void set_dispatch_context(smelt_cmd* cmd, const KernelCode* code, const __smelt_hk_launch* launch);
// This thread's dispatch, or null while no thread runs a kernel: a signal handler may call it,
// and must not touch thread-local storage a thread has never used (its first use may allocate).
const DispatchContext* running_dispatch();
// Reports faults at a buffer's guard page as the running kernel's (fault.cpp); idempotent.
void install_fault_handler();

struct CompileResult {
  std::shared_ptr<Module> module;
  bool cache_hit = false;
  std::string error;
};
CompileResult compile_module(const Options& options, const std::string& header_hash, const std::string& cpp,
                             bool fast_math);
std::string hash_hex(const std::string& data);

}  // namespace smelt_host

// The host backend's smelt.h: every exported function, with the validation that makes a kernel
// that runs here fail on a Mac only for reasons host cannot see.
#include <dlfcn.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "../common/abi_common.h"
#include "msl_front.h"
#include "host.h"

using namespace smelt_host;
using smelt_common::LibraryOptions;
using smelt_common::set_error;

namespace smelt_host {

void buffer_retain(smelt_buffer* b) { b->refs.fetch_add(1); }

void buffer_release(smelt_buffer* b) {
  if (b->refs.fetch_sub(1) == 1) {
    if (b->mapping) munmap(b->mapping, b->mapped);
    delete b;
  }
}

}  // namespace smelt_host

namespace {

size_t page_size() { return size_t(sysconf(_SC_PAGESIZE)); }

uint64_t physical_memory() { return uint64_t(sysconf(_SC_PHYS_PAGES)) * page_size(); }

std::string read_all(const std::string& path, bool& ok) {
  std::ifstream in(path, std::ios::binary);
  ok = bool(in);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool live_pipeline(smelt_device* dev, const smelt_pipeline* p) {
  std::lock_guard<std::mutex> lock(dev->live_mutex);
  return dev->pipelines.count(p) != 0;
}

bool live_buffer(smelt_device* dev, const smelt_buffer* b) {
  std::lock_guard<std::mutex> lock(dev->live_mutex);
  return dev->buffers.count(b) != 0;
}

void release_items(std::vector<Dispatch>& items) {
  for (auto& d : items)
    for (auto*& b : d.buffers)
      if (b) {
        buffer_release(b);
        b = nullptr;
      }
}

int facts_of(void* ctx, uint64_t handle, smelt_kernel_facts* out) {
  auto* pipe = (smelt_pipeline*)(uintptr_t)handle;
  if (!live_pipeline((smelt_device*)ctx, pipe)) return -1;
  const KernelInfo& info = pipe->code->info;
  out->name = info.name.c_str();
  out->buffer_mask = info.buffer_mask;
  out->threadgroup_mask = info.threadgroup_mask;
  out->static_threadgroup_memory = pipe->code->static_threadgroup.load();  // known after a first run
  out->max_threads_per_threadgroup = pipe->dev->options.max_threads;
  return 0;
}

int length_of(void* ctx, uint64_t handle, uint64_t* length) {
  auto* buf = (smelt_buffer*)(uintptr_t)handle;
  if (!live_buffer((smelt_device*)ctx, buf)) return -1;
  *length = buf->length;
  return 0;
}

// A checked dispatch record as the executor runs it, with its buffers retained.
Dispatch to_dispatch(const smelt_dispatch& r) {
  Dispatch d;
  auto* pipe = (smelt_pipeline*)(uintptr_t)r.pipeline;
  d.code = pipe->code;
  for (int i = 0; i < 3; ++i) {
    bool by_threads = r.kind == SMELT_REC_DISPATCH_THREADS;
    d.grid.groups[i] = by_threads ? (r.size[i] + r.threadgroup[i] - 1) / r.threadgroup[i] : r.size[i];
    d.grid.group[i] = r.threadgroup[i];
    d.grid.threads[i] = by_threads ? r.size[i] : r.size[i] * r.threadgroup[i];
  }
  std::fill(std::begin(d.bytes_at), std::end(d.bytes_at), -1);
  size_t byte_total = 0;
  for (uint32_t i = 0; i < r.nbindings; ++i) {
    const smelt_binding& b = r.bindings[i];
    if (b.kind == SMELT_BIND_BUFFER) {
      auto* buf = (smelt_buffer*)(uintptr_t)b.a;
      buffer_retain(buf);
      d.buffers[b.index] = buf;
      d.offsets[b.index] = b.b;
    } else {
      d.bytes_at[b.index] = int(byte_total);
      d.bytes_len[b.index] = b.b;
      byte_total += (b.b + 15) & ~size_t(15);
    }
  }
  d.bytes.assign((byte_total + 7) / 8 + 1, 0);
  for (uint32_t i = 0; i < r.nbindings; ++i)
    if (r.bytes[i]) std::memcpy((char*)d.bytes.data() + d.bytes_at[r.bindings[i].index], r.bytes[i], r.bindings[i].b);
  d.ntgmem = r.ntgmem;
  std::copy(r.tgmem, r.tgmem + r.ntgmem, d.tgmem);
  return d;
}

// Fails a call on a device that smelt_cmd_abandon marked lost, with the text it recorded.
bool lost(smelt_device* dev, char* err, size_t errlen) {
  if (!dev->lost.load(std::memory_order_acquire)) return false;
  set_error(err, errlen, dev->lost_text);
  return true;
}

bool in_buffer(const char* call, smelt_buffer* buf, uint64_t offset, const void* host, uint64_t length, char* err,
               size_t errlen) {
  if (!live_buffer(buf->dev, buf)) {
    set_error(err, errlen, std::string(call) + ": not a live buffer");
    return false;
  }
  std::string why = smelt_common::copy_error(call, buf->length, offset, host, length);
  set_error(err, errlen, why);
  return why.empty();
}

// Translates and compiles a library; safe on any thread, several at once.
smelt_library* make_library(smelt_device* dev, const std::string& source, const LibraryOptions& lo, std::string& why) {
  bool fast_math = lo.fast_math;
  Translation t = translate_msl(source, dev->options.debug, lo.version);
  if (!t.ok) {
    why = "MSL compilation failed:\n" + t.error;
    return nullptr;
  }
  CompileResult c = compile_module(dev->options, dev->header_hash, t.cpp, fast_math);
  if (!c.module) {
    why = c.error;
    return nullptr;
  }
  auto* lib = new smelt_library{dev, c.module, t.kernels};
  std::lock_guard<std::mutex> lock(dev->live_mutex);
  ++dev->libraries;
  ++(c.cache_hit ? dev->cache_hits : dev->compiles);
  return lib;
}

}  // namespace

extern "C" {

SMELT_API uint32_t smelt_abi_version(void) { return SMELT_ABI_VERSION; }

SMELT_API const char* smelt_backend_name(void) { return "host"; }

SMELT_API smelt_device* smelt_device_open(const char* options, char* err, size_t errlen) {
  Options o;
  std::string why;
  if (!smelt_common::parse_device_options(options, o, why)) {
    set_error(err, errlen, "host backend: " + why);
    return nullptr;
  }
  if (o.include.empty()) {
    set_error(err, errlen, "host backend: the include=DIR option must name shim/host/msl (the metal_stdlib compatibility header)");
    return nullptr;
  }
  bool ok1, ok2, ok3;
  std::string headers = read_all(o.include + "/metal_stdlib", ok1) + read_all(o.include + "/metal_core", ok2) +
                        read_all(o.include + "/smelt_kernel_abi.h", ok3);
  if (!ok1 || !ok2 || !ok3) {
    set_error(err, errlen, "host backend: " + o.include + " does not hold metal_stdlib, metal_core and smelt_kernel_abi.h");
    return nullptr;
  }
  if (o.threads == 0) o.threads = std::max(1u, std::thread::hardware_concurrency());
  void* page = mmap(nullptr, page_size(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (page == MAP_FAILED) {
    set_error(err, errlen, "host backend: cannot map the completion counter");
    return nullptr;
  }
  auto* dev = new smelt_device();
  dev->options = o;
  dev->header_hash = hash_hex(headers);
  dev->completion = (volatile uint64_t*)page;
  dev->executor.reset(new Executor(dev, o.threads));
  return dev;
}

SMELT_API void smelt_device_close(smelt_device* dev) {
  if (!dev) return;
  // A thread is stuck in a runaway kernel and would never join: leave it the executor, the
  // completion page and the device it uses, rather than free what it still touches.
  if (dev->lost.load()) return;
  dev->executor.reset();  // runs what was committed, then stops
  munmap((void*)dev->completion, page_size());
  delete dev;
}

SMELT_API int smelt_device_name(smelt_device* dev, char* out, size_t outlen) {
  if (!dev) return SMELT_ERROR;
  set_error(out, outlen, "smelt host (" + std::to_string(dev->options.threads) + " CPU threads)");
  return SMELT_OK;
}

SMELT_API int smelt_device_limits(smelt_device* dev, smelt_limits* out) {
  if (!dev || !out) return SMELT_ERROR;
  std::memset(out, 0, sizeof *out);
  out->max_buffer_length = physical_memory();
  out->max_threads_per_threadgroup = SMELT_MAX_THREADS_PER_THREADGROUP;
  out->max_threadgroup_memory = SMELT_MAX_THREADGROUP_MEMORY;
  out->max_buffer_slots = SMELT_MAX_BUFFER_SLOTS;
  out->simd_width = __SMELT_SIMD_WIDTH;
  out->unified_memory = 1;
  out->host_visible = dev->options.host_visible ? 1 : 0;
  return SMELT_OK;
}

SMELT_API int smelt_device_stats_get(smelt_device* dev, smelt_device_stats* out) {
  if (!dev || !out) return SMELT_ERROR;
  std::lock_guard<std::mutex> lock(dev->live_mutex);
  out->buffers = dev->buffers.size();
  out->buffer_bytes = dev->buffer_bytes;
  out->libraries = dev->libraries;
  out->pipelines = dev->pipelines.size();
  out->command_buffers = dev->command_buffers;
  out->compiles = dev->compiles;
  out->cache_hits = dev->cache_hits;
  return SMELT_OK;
}

SMELT_API const volatile uint64_t* smelt_device_completion_counter(smelt_device* dev) {
  return dev ? dev->completion : nullptr;
}

SMELT_API smelt_buffer* smelt_buffer_new(smelt_device* dev, uint64_t length, char* err, size_t errlen) {
  if (!dev || lost(dev, err, errlen)) return nullptr;
  if (length > physical_memory()) {
    set_error(err, errlen, "buffer of " + std::to_string(length) + " bytes is over the device's maximum of " +
                               std::to_string(physical_memory()));
    return nullptr;
  }
  // Buffers of a MiB or more start 256 bytes times 0..15 into their mapping, in turn. Page-aligned
  // buffers all share the low 12 bits of their addresses, so a kernel streaming one buffer into
  // another made the CPU hold loads back behind stores to the same offset in a 4 KiB page of the
  // other ("4K aliasing"): the 64M-element chain benchmark ran 1.4x slower.
  //
  // A PROT_NONE guard page follows every buffer, so that a kernel running past the end faults at
  // once and fault.cpp names it, rather than reading or corrupting whatever lies beyond. Smaller
  // buffers end at the guard: they start kBufferAlign-aligned rather than on a page (Metal gives
  // pages; MSL types need at most 32 bytes, long4), so one element past the end is caught whenever
  // the length is a multiple of kBufferAlign. Staggered buffers end up to a page before the guard.
  constexpr size_t kBufferAlign = 32;
  static std::atomic<unsigned> turn{0};
  bool staggered = length >= (uint64_t(1) << 20);
  size_t stagger = staggered ? size_t(turn.fetch_add(1) % 16) * 256 : 0;
  size_t page = page_size();
  size_t used = size_t((length + kBufferAlign - 1) / kBufferAlign * kBufferAlign);
  size_t data = length == 0 ? page : (stagger + used + page - 1) / page * page;
  size_t start = staggered ? stagger : data - used;
  void* m = mmap(nullptr, data + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) {
    set_error(err, errlen, "cannot allocate a buffer of " + std::to_string(length) + " bytes");
    return nullptr;
  }
  // Without the guard (a process at its limit of mappings) the buffer still works.
  mprotect(static_cast<char*>(m) + data, page, PROT_NONE);
  install_fault_handler();
  auto* b = new smelt_buffer{dev, static_cast<char*>(m) + start, length, m, data + page, {1}};
  std::lock_guard<std::mutex> lock(dev->live_mutex);
  dev->buffers.insert(b);
  dev->buffer_bytes += length;
  return b;
}

SMELT_API void* smelt_buffer_contents(smelt_buffer* buf) {
  return buf && buf->dev->options.host_visible ? buf->memory : nullptr;
}

SMELT_API uint64_t smelt_buffer_length(smelt_buffer* buf) { return buf ? buf->length : 0; }

SMELT_API void smelt_buffer_free(smelt_buffer* buf) {
  if (!buf) return;
  {
    std::lock_guard<std::mutex> lock(buf->dev->live_mutex);
    if (!buf->dev->buffers.erase(buf)) return;
    buf->dev->buffer_bytes -= buf->length;
  }
  buffer_release(buf);  // a command buffer still using it holds its own reference
}

SMELT_API int smelt_buffer_write(smelt_buffer* buf, uint64_t offset, const void* src, uint64_t length, char* err,
                                 size_t errlen) {
  if (!buf || lost(buf->dev, err, errlen) || !in_buffer("smelt_buffer_write", buf, offset, src, length, err, errlen))
    return SMELT_ERROR;
  if (length) std::memcpy((char*)buf->memory + offset, src, length);
  return SMELT_OK;
}

SMELT_API int smelt_buffer_read(smelt_buffer* buf, uint64_t offset, void* dst, uint64_t length, char* err,
                                size_t errlen) {
  if (!buf || lost(buf->dev, err, errlen) || !in_buffer("smelt_buffer_read", buf, offset, dst, length, err, errlen))
    return SMELT_ERROR;
  if (length) std::memcpy(dst, (const char*)buf->memory + offset, length);
  return SMELT_OK;
}

SMELT_API smelt_buffer* smelt_buffer_wrap(smelt_device* dev, void* memory, uint64_t length, char* err, size_t errlen) {
  if (!dev || lost(dev, err, errlen)) return nullptr;
  if (!memory) {
    set_error(err, errlen, "smelt_buffer_wrap: memory is NULL");
    return nullptr;
  }
  // The CPU is the device: its kernels use the caller's memory where it lies.
  auto* b = new smelt_buffer{dev, memory, length, nullptr, 0, {1}};
  std::lock_guard<std::mutex> lock(dev->live_mutex);
  dev->buffers.insert(b);
  dev->buffer_bytes += length;
  return b;
}

SMELT_API smelt_library* smelt_library_new(smelt_device* dev, const char* source, size_t source_len, const char* options, char* err,
                                           size_t errlen) {
  return smelt_common::new_library(dev, source, source_len, options, err, errlen, lost, make_library);
}

SMELT_API smelt_compile* smelt_library_new_async(smelt_device* dev, const char* source, size_t source_len, const char* options,
                                                 char* err, size_t errlen) {
  return smelt_common::new_library_async(dev, source, source_len, options, err, errlen, lost, make_library);
}

SMELT_API void smelt_library_free(smelt_library* lib) {
  if (!lib) return;
  {
    std::lock_guard<std::mutex> lock(lib->dev->live_mutex);
    --lib->dev->libraries;
  }
  delete lib;
}

SMELT_API smelt_pipeline* smelt_pipeline_new(smelt_library* lib, const char* function_name, char* err, size_t errlen) {
  if (!lib || !function_name || lost(lib->dev, err, errlen)) return nullptr;
  std::string name = function_name, why;
  const KernelInfo* info = smelt_common::find_kernel(lib->kernels, name, why);
  if (!info) {
    set_error(err, errlen, why);
    return nullptr;
  }
  auto code = std::make_shared<KernelCode>();
  code->module = lib->module;
  code->info = *info;
  code->thread_fn = (__smelt_hk_thread_fn)dlsym(lib->module->handle, ("__smelt_kthread_" + name).c_str());
  if (!info->needs_fibers) code->loop_fn = (__smelt_hk_loop_fn)dlsym(lib->module->handle, ("__smelt_kloop_" + name).c_str());
  if (!code->thread_fn || (!info->needs_fibers && !code->loop_fn)) {
    set_error(err, errlen, "host backend: the compiled module lacks the launchers of '" + name + "'");
    return nullptr;
  }
  auto* p = new smelt_pipeline{lib->dev, code};
  std::lock_guard<std::mutex> lock(lib->dev->live_mutex);
  lib->dev->pipelines.insert(p);
  return p;
}

SMELT_API int smelt_pipeline_info_get(smelt_pipeline* pipe, smelt_pipeline_info* out) {
  if (!pipe || !out) return SMELT_ERROR;
  std::memset(out, 0, sizeof *out);
  out->max_threads_per_threadgroup = pipe->dev->options.max_threads;
  out->thread_execution_width = __SMELT_SIMD_WIDTH;
  out->static_threadgroup_memory = pipe->code->static_threadgroup.load();  // 0 until the kernel has run
  out->buffer_mask = pipe->code->info.buffer_mask;
  out->threadgroup_mask = pipe->code->info.threadgroup_mask;
  return SMELT_OK;
}

SMELT_API void smelt_pipeline_free(smelt_pipeline* pipe) {
  if (!pipe) return;
  {
    std::lock_guard<std::mutex> lock(pipe->dev->live_mutex);
    if (!pipe->dev->pipelines.erase(pipe)) return;
  }
  delete pipe;  // a command buffer using it holds its own reference to the code
}

static void close_open(smelt_cmd* cmd) { smelt_common::release_open(cmd->dev->live_mutex, cmd->dev->open_command_buffers, cmd->open); }

SMELT_API smelt_cmd* smelt_cmd_new(smelt_device* dev, char* err, size_t errlen) {
  return smelt_common::new_command<smelt_cmd>(dev, err, errlen, lost);
}

SMELT_API int smelt_cmd_encode(smelt_cmd* cmd, const void* records, size_t length, char* err, size_t errlen) {
  if (!cmd || lost(cmd->dev, err, errlen)) return SMELT_ERROR;
  smelt_record_env env{cmd->dev, SMELT_MAX_THREADGROUP_MEMORY, facts_of, length_of, nullptr};
  if (!smelt_common::accept_command_records(cmd, records, length, env, err, errlen)) return SMELT_ERROR;
  smelt_dispatch r;
  for (size_t at = 0; smelt_records_next(records, length, &at, &r);) {
    if (r.kind == SMELT_REC_BARRIER) {
      Dispatch d;
      d.barrier = true;
      cmd->items.push_back(std::move(d));
    } else {
      cmd->items.push_back(to_dispatch(r));
    }
  }
  return SMELT_OK;
}

SMELT_API uint64_t smelt_cmd_commit(smelt_cmd* cmd, char* err, size_t errlen) {
  if (!cmd) return 0;
  if (cmd->state != SMELT_CMD_RECORDING) {
    set_error(err, errlen, "commit: the command buffer was already committed");
    return 0;
  }
  if (lost(cmd->dev, err, errlen)) return 0;
  close_open(cmd);
  cmd->sequence = ++cmd->dev->next_sequence;
  cmd->dev->executor->submit(cmd);
  return cmd->sequence;
}

SMELT_API int smelt_cmd_status(smelt_cmd* cmd, char* err, size_t errlen) {
  if (!cmd) return SMELT_ERROR;
  if (cmd->state == SMELT_CMD_RECORDING) return SMELT_CMD_RECORDING;
  std::string error;
  int s = cmd->dev->executor->status(cmd, error);
  if (s == SMELT_ERROR) set_error(err, errlen, error);
  return s;
}

SMELT_API int smelt_cmd_wait(smelt_cmd* cmd, uint64_t timeout_ms, char* err, size_t errlen) {
  if (!cmd) return SMELT_ERROR;
  if (cmd->state == SMELT_CMD_RECORDING) {
    set_error(err, errlen, "wait: the command buffer was never committed");
    return SMELT_ERROR;
  }
  std::string error;
  int s = cmd->dev->executor->wait(cmd, timeout_ms, error);
  if (s == SMELT_ERROR) set_error(err, errlen, error);
  return s;
}

SMELT_API int smelt_cmd_abandon(smelt_cmd* cmd, char* err, size_t errlen) {
  if (!cmd) return SMELT_ERROR;
  if (cmd->state == SMELT_CMD_RECORDING) {
    set_error(err, errlen, "abandon: the command buffer was never committed");
    return SMELT_ERROR;
  }
  std::string error;
  int s = cmd->dev->executor->abandon(cmd, error);
  if (s == SMELT_ERROR) set_error(err, errlen, error);
  return s;
}

SMELT_API void smelt_cmd_free(smelt_cmd* cmd) {
  if (!cmd) return;
  close_open(cmd);
  if (cmd->state == SMELT_CMD_RECORDING) release_items(cmd->items);
  else if (cmd->dev->lost.load() && !cmd->dev->executor->released(cmd)) {
    return;  // the stuck thread still uses it: leaked with the device (smelt_device_close)
  } else {
    std::string ignored;  // a failure nobody waited for stays for the next wait on the device
    cmd->dev->executor->wait(cmd, 0, ignored);
  }
  {
    std::lock_guard<std::mutex> lock(cmd->dev->live_mutex);
    --cmd->dev->command_buffers;
  }
  delete cmd;
}

}  // extern "C"

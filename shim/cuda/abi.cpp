// The CUDA backend's smelt.h: device buffers with explicit copies (host_visible 0), libraries
// translated from MSL and compiled by NVRTC, and command buffers launched on one stream at commit.
// That stream carries every zero fill and copy too: nothing may go to the legacy default stream,
// which the non-blocking stream is not ordered against.
// A completion thread per device waits for each command buffer's event and then publishes it
// through the completion counter, so that nothing ever calls back into the caller.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "../common/abi_common.h"
#include "compile.h"
#include "cuda_api.h"
#include "msl_front.h"
#include "translate_cuda.h"

using namespace smelt_cuda;
using smelt_common::LibraryOptions;
using smelt_common::set_error;

namespace {

// Mirrors __smelt_cuda_launch in shim/cuda/msl/metal_stdlib: the one kernel parameter.
struct Launch {
  unsigned long long buffers[SMELT_MAX_BUFFER_SLOTS];
  unsigned long long lengths[SMELT_MAX_BUFFER_SLOTS];
  unsigned tgmem[SMELT_MAX_THREADGROUP_SLOTS];
  unsigned threads[3];
  unsigned group[3];
};

struct Module {
  const Driver* cu;
  CUcontext ctx;
  CUmodule module = nullptr;
  ~Module() {
    if (!module) return;
    cu->cuCtxSetCurrent(ctx);
    cu->cuModuleUnload(module);
  }
};

struct Kernel {
  std::shared_ptr<Module> module;
  KernelInfo info;
  CUfunction function = nullptr;
  uint32_t max_threads = 0, static_shared = 0;
};

}  // namespace

struct smelt_device {
  const Driver* cu = nullptr;
  CUdevice device = 0;
  CUcontext ctx = nullptr;
  CUstream stream = nullptr;
  // Buffers come from the device's stream-ordered pool where the driver has one: allocating and
  // freeing are then queued on the stream like kernels and wait for nothing.
  bool pooled = false;
  smelt_common::DeviceOptions options;
  Headers headers;
  int arch = 0;
  std::string name;
  size_t total_memory = 0;
  unsigned max_grid_y = 65535, max_grid_z = 65535;
  volatile uint64_t* completion = nullptr;

  std::mutex live_mutex;
  std::set<const smelt_buffer*> buffers;
  std::set<const smelt_pipeline*> pipelines;
  uint64_t buffer_bytes = 0, libraries = 0, command_buffers = 0, compiles = 0, cache_hits = 0;
  uint32_t open_command_buffers = 0;
  uint64_t next_sequence = 0;

  // The completion thread's queue, and the state every waiter reads, under done_mutex.
  std::mutex done_mutex;
  std::condition_variable done_cv;
  std::deque<smelt_cmd*> pending;
  bool stopping = false;
  std::thread completer;
  std::atomic<bool> lost{false};
  std::string lost_text;
  // The first failure no wait or status has reported yet: sequence and text.
  uint64_t unreported_seq = 0;
  std::string unreported_text;
  // Constant-byte arenas of finished command buffers, for reuse: cuMemAlloc and cuMemFree per
  // commit would cost more than small command buffers' kernels (and cuMemFree may wait for the
  // device to go idle).
  std::vector<std::pair<CUdeviceptr, size_t>> arenas;
};

struct smelt_buffer {
  smelt_device* dev;
  CUdeviceptr ptr;
  uint64_t length;
  std::atomic<int> refs;
};

struct smelt_library {
  smelt_device* dev;
  std::shared_ptr<Module> module;
  std::vector<KernelInfo> kernels;
};

struct smelt_pipeline {
  smelt_device* dev;
  std::shared_ptr<Kernel> kernel;
};

namespace {

struct Dispatch {
  std::shared_ptr<Kernel> kernel;
  unsigned groups[3];
  unsigned block[3];
  unsigned shared_bytes;
  Launch launch;
  // SMELT_BIND_BYTES bindings: slot and offset of their bytes in the command buffer's arena.
  std::vector<std::pair<unsigned, size_t>> bytes;
};

}  // namespace

struct smelt_cmd {
  smelt_device* dev;
  int state = SMELT_CMD_RECORDING;  // under dev->done_mutex once committed
  bool open = false;
  uint64_t sequence = 0;
  std::vector<Dispatch> dispatches;
  std::vector<smelt_buffer*> retained;
  std::string arena;  // constant bytes of every dispatch, 16-byte aligned
  CUdeviceptr arena_device = 0;
  size_t arena_capacity = 0;
  CUevent event = nullptr;
  std::string error;       // set when the command buffer failed
  bool released = false;   // the completion thread is done with it
  bool reported = false;   // its failure was reported by its own wait or status
};

namespace {

void buffer_release(smelt_buffer* b) {
  if (b->refs.fetch_sub(1) == 1) {
    b->dev->cu->cuCtxSetCurrent(b->dev->ctx);
    // Queued after every kernel committed so far, which includes the last that used it.
    if (b->dev->pooled) b->dev->cu->cuMemFreeAsync(b->ptr, b->dev->stream);
    else b->dev->cu->cuMemFree(b->ptr);
    delete b;
  }
}

bool lost(smelt_device* dev, char* err, size_t errlen) {
  if (!dev->lost.load(std::memory_order_acquire)) return false;
  std::lock_guard<std::mutex> lock(dev->done_mutex);
  set_error(err, errlen, dev->lost_text);
  return true;
}

// The kernels of a command buffer, for messages: "a, b and 3 more".
std::string kernel_names(const smelt_cmd* cmd) {
  std::vector<std::string> names;
  for (auto& d : cmd->dispatches)
    if (std::find(names.begin(), names.end(), d.kernel->info.name) == names.end()) names.push_back(d.kernel->info.name);
  std::string out;
  for (size_t i = 0; i < names.size() && i < 4; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > 4) out += " and " + std::to_string(names.size() - 4) + " more";
  return out.empty() ? "no kernels" : out;
}

// Marks the device lost (under done_mutex): a CUDA fault poisons the context for every later call.
void lose(smelt_device* dev, const std::string& text) {
  if (dev->lost.load()) return;
  dev->lost_text = "device lost: " + text;
  dev->lost.store(true, std::memory_order_release);
}

// Finishes a command buffer (under done_mutex): frees its arena and event, releases its buffers.
void finish(smelt_device* dev, smelt_cmd* cmd, const std::string& error) {
  if (!error.empty()) {
    cmd->error = error;
    if (dev->unreported_seq == 0) {
      dev->unreported_seq = cmd->sequence;
      dev->unreported_text = error;
    }
    lose(dev, error);
  }
  dev->cu->cuCtxSetCurrent(dev->ctx);
  constexpr size_t kKeptArenas = 32;
  if (cmd->arena_device && error.empty() && dev->arenas.size() < kKeptArenas)
    dev->arenas.push_back({cmd->arena_device, cmd->arena_capacity});
  else if (cmd->arena_device)
    dev->cu->cuMemFree(cmd->arena_device);
  cmd->arena_device = 0;
  if (cmd->event) dev->cu->cuEventDestroy(cmd->event);
  cmd->event = nullptr;
  for (auto* b : cmd->retained) buffer_release(b);
  cmd->retained.clear();
  cmd->dispatches.clear();
  cmd->state = error.empty() ? SMELT_CMD_COMPLETED : SMELT_ERROR;
  cmd->released = true;
  __atomic_add_fetch(dev->completion, 1, __ATOMIC_RELEASE);
  dev->done_cv.notify_all();
}

// Waits for each committed command buffer's event in commit order.
void complete_loop(smelt_device* dev) {
  dev->cu->cuCtxSetCurrent(dev->ctx);
  for (;;) {
    smelt_cmd* cmd;
    {
      std::unique_lock<std::mutex> lock(dev->done_mutex);
      dev->done_cv.wait(lock, [dev] { return dev->stopping || !dev->pending.empty(); });
      if (dev->pending.empty()) return;
      cmd = dev->pending.front();
    }
    CUresult r = cmd->event ? dev->cu->cuEventSynchronize(cmd->event) : CUDA_SUCCESS;
    std::lock_guard<std::mutex> lock(dev->done_mutex);
    dev->pending.pop_front();
    if (cmd->released) continue;  // abandoned: the device was lost meanwhile
    std::string error = cmd->error;
    if (error.empty() && r != CUDA_SUCCESS)
      error = "command buffer #" + std::to_string(cmd->sequence) + " (kernels " + kernel_names(cmd) + ") failed: " + driver_error(r) +
              " (set SMELT_CUDA_DEBUG=1 to run each kernel alone and name the one that failed)";
    finish(dev, cmd, error);
  }
}

int facts_of(void* ctx, uint64_t handle, smelt_kernel_facts* out) {
  auto* dev = (smelt_device*)ctx;
  auto* pipe = (smelt_pipeline*)(uintptr_t)handle;
  {
    std::lock_guard<std::mutex> lock(dev->live_mutex);
    if (!dev->pipelines.count(pipe)) return -1;
  }
  out->name = pipe->kernel->info.name.c_str();
  out->buffer_mask = pipe->kernel->info.buffer_mask;
  out->threadgroup_mask = pipe->kernel->info.threadgroup_mask;
  out->static_threadgroup_memory = pipe->kernel->static_shared;
  out->max_threads_per_threadgroup = pipe->kernel->max_threads;
  return 0;
}

int length_of(void* ctx, uint64_t handle, uint64_t* length) {
  auto* dev = (smelt_device*)ctx;
  auto* buf = (smelt_buffer*)(uintptr_t)handle;
  std::lock_guard<std::mutex> lock(dev->live_mutex);
  if (!dev->buffers.count(buf)) return -1;
  *length = buf->length;
  return 0;
}

// CUDA's grid is narrower than Metal's in y and z.
int grid_fits(void* ctx, const smelt_dispatch* d, const smelt_kernel_facts*, char* why, size_t whylen) {
  auto* dev = (smelt_device*)ctx;
  for (int i = 1; i < 3; ++i) {
    uint64_t groups = d->kind == SMELT_REC_DISPATCH_THREADS ? (uint64_t(d->size[i]) + d->threadgroup[i] - 1) / d->threadgroup[i] : d->size[i];
    unsigned most = i == 1 ? dev->max_grid_y : dev->max_grid_z;
    if (groups > most) {
      set_error(why, whylen, std::to_string(groups) + " threadgroups along " + (i == 1 ? "y" : "z") +
                                 " are more than CUDA's grid allows (" + std::to_string(most) + ")");
      return -1;
    }
  }
  return 0;
}

Dispatch to_dispatch(smelt_cmd* cmd, const smelt_dispatch& r) {
  Dispatch d{};
  auto* pipe = (smelt_pipeline*)(uintptr_t)r.pipeline;
  d.kernel = pipe->kernel;
  bool by_threads = r.kind == SMELT_REC_DISPATCH_THREADS;
  for (int i = 0; i < 3; ++i) {
    d.groups[i] = by_threads ? (r.size[i] + r.threadgroup[i] - 1) / r.threadgroup[i] : r.size[i];
    d.block[i] = r.threadgroup[i];
    d.launch.group[i] = r.threadgroup[i];
    d.launch.threads[i] = by_threads ? r.size[i] : r.size[i] * r.threadgroup[i];
  }
  for (uint32_t i = 0; i < r.nbindings; ++i) {
    const smelt_binding& b = r.bindings[i];
    if (b.kind == SMELT_BIND_BUFFER) {
      auto* buf = (smelt_buffer*)(uintptr_t)b.a;
      buf->refs.fetch_add(1);
      cmd->retained.push_back(buf);
      d.launch.buffers[b.index] = buf->ptr + b.b;
      d.launch.lengths[b.index] = buf->length - b.b;
    } else {
      size_t at = cmd->arena.size();
      cmd->arena.append(r.bytes[i], r.bytes[i] + b.b);
      cmd->arena.resize((cmd->arena.size() + 15) & ~size_t(15), '\0');
      d.bytes.push_back({b.index, at});
      d.launch.lengths[b.index] = b.b;
    }
  }
  // [[threadgroup(i)]] memory shares the block's dynamic shared memory, each 16-byte rounded as
  // Metal allocates it.
  unsigned at = 0;
  for (uint32_t i = 0; i < r.ntgmem; ++i) {
    d.launch.tgmem[i] = at;
    at += (r.tgmem[i] + 15u) & ~15u;
  }
  d.shared_bytes = at;
  return d;
}

// Translates, compiles (or finds in the cache) and loads a library; safe on any thread.
smelt_library* make_library(smelt_device* dev, const std::string& source, const LibraryOptions& lo, std::string& why) {
  Translation t = translate_msl(source, lo.version);
  if (!t.ok) {
    why = "MSL compilation failed:\n" + t.error;
    return nullptr;
  }
  Compiled c = compile_cuda(t.cuda, dev->headers, dev->arch, lo.fast_math, dev->options.cache);
  if (!c.ok) {
    why = c.error;
    return nullptr;
  }
  auto module = std::make_shared<Module>();
  module->cu = dev->cu;
  module->ctx = dev->ctx;
  dev->cu->cuCtxSetCurrent(dev->ctx);
  CUresult r = dev->cu->cuModuleLoadData(&module->module, c.image.data());
  if (r != CUDA_SUCCESS) {
    module->module = nullptr;
    why = "CUDA backend: cannot load the compiled kernels: " + driver_error(r);
    return nullptr;
  }
  auto* lib = new smelt_library{dev, module, t.kernels};
  std::lock_guard<std::mutex> lock(dev->live_mutex);
  ++dev->libraries;
  ++(c.cache_hit ? dev->cache_hits : dev->compiles);
  return lib;
}

bool in_buffer(const char* call, smelt_buffer* buf, uint64_t offset, const void* host, uint64_t length, char* err, size_t errlen) {
  {
    std::lock_guard<std::mutex> lock(buf->dev->live_mutex);
    if (!buf->dev->buffers.count(buf)) {
      set_error(err, errlen, std::string(call) + ": not a live buffer");
      return false;
    }
  }
  std::string why = smelt_common::copy_error(call, buf->length, offset, host, length);
  set_error(err, errlen, why);
  return why.empty();
}

// Waits for everything queued on the device's stream so far (a copy just issued among it).
CUresult drain(smelt_device* dev, CUresult r) { return r == CUDA_SUCCESS ? dev->cu->cuStreamSynchronize(dev->stream) : r; }

smelt_buffer* new_buffer(smelt_device* dev, uint64_t length, char* err, size_t errlen) {
  CUdeviceptr p = 0;
  dev->cu->cuCtxSetCurrent(dev->ctx);
  // A zero-length buffer still gets an address a kernel may be given.
  const size_t bytes = size_t(std::max<uint64_t>(length, 16));
  // The zero fill goes on the kernels' stream: the plain cuMemsetD8 ran on the legacy default
  // stream, which the non-blocking kernel stream is not ordered against, so under load it could
  // land after a kernel had written the buffer and wipe its results. From the pool, allocation,
  // fill and the eventual free are all ordered on that stream, so nothing needs waiting for;
  // otherwise the wait keeps a buffer freed before any use from being freed under its fill.
  CUresult r = dev->pooled ? dev->cu->cuMemAllocAsync(&p, bytes, dev->stream) : dev->cu->cuMemAlloc(&p, bytes);
  if (r == CUDA_SUCCESS) r = dev->cu->cuMemsetD8Async(p, 0, bytes, dev->stream);
  if (r == CUDA_SUCCESS && !dev->pooled) r = drain(dev, r);
  if (r != CUDA_SUCCESS) {
    if (p && dev->pooled) dev->cu->cuMemFreeAsync(p, dev->stream);
    else if (p) dev->cu->cuMemFree(p);
    set_error(err, errlen, "cannot allocate a buffer of " + std::to_string(length) + " bytes: " + driver_error(r));
    return nullptr;
  }
  auto* b = new smelt_buffer{dev, p, length, {1}};
  std::lock_guard<std::mutex> lock(dev->live_mutex);
  dev->buffers.insert(b);
  dev->buffer_bytes += length;
  return b;
}

void close_open(smelt_cmd* cmd) { smelt_common::release_open(cmd->dev->live_mutex, cmd->dev->open_command_buffers, cmd->open); }

// A failure of another command buffer not yet reported by anyone, once (under done_mutex).
bool take_unreported(smelt_cmd* cmd, std::string& text) {
  smelt_device* dev = cmd->dev;
  if (dev->unreported_seq == 0 || dev->unreported_seq == cmd->sequence) return false;
  text = "command buffer #" + std::to_string(dev->unreported_seq) + " failed: " + dev->unreported_text;
  dev->unreported_seq = 0;
  return true;
}

// The state of a committed command buffer (under done_mutex), reporting failures as smelt.h says.
int report(smelt_cmd* cmd, std::string& error) {
  smelt_device* dev = cmd->dev;
  if (cmd->state == SMELT_ERROR) {
    error = cmd->error;
    if (dev->unreported_seq == cmd->sequence) dev->unreported_seq = 0;
    return SMELT_ERROR;
  }
  if (take_unreported(cmd, error)) return SMELT_ERROR;
  if (cmd->state != SMELT_CMD_COMPLETED && dev->lost.load()) {
    error = dev->lost_text;
    return SMELT_ERROR;
  }
  return cmd->state;
}

}  // namespace

extern "C" {

SMELT_API uint32_t smelt_abi_version(void) { return SMELT_ABI_VERSION; }

SMELT_API const char* smelt_backend_name(void) { return "cuda"; }

SMELT_API smelt_device* smelt_device_open(const char* options, char* err, size_t errlen) {
  smelt_common::DeviceOptions o;
  std::string why;
  if (!smelt_common::parse_device_options(options, o, why)) {
    set_error(err, errlen, "CUDA backend: " + why);
    return nullptr;
  }
  const Driver* cu = driver(why);
  if (!cu) {
    set_error(err, errlen, "CUDA backend: " + why);
    return nullptr;
  }
  Headers headers;
  if (!load_headers(o.include, headers, why)) {
    set_error(err, errlen, "CUDA backend: the include=DIR[:DIR] option must name shim/cuda/msl and shim/host/msl: " + why);
    return nullptr;
  }
  // NVRTC is needed only to compile, but a device that can run nothing helps nobody: say so now.
  if (!nvrtc(why)) {
    set_error(err, errlen, "CUDA backend: " + why);
    return nullptr;
  }
  int count = 0;
  CUresult r = cu->cuInit(0);
  if (r == CUDA_SUCCESS) r = cu->cuDeviceGetCount(&count);
  if (r != CUDA_SUCCESS || count == 0) {
    set_error(err, errlen, "CUDA backend: no CUDA device (" + (r != CUDA_SUCCESS ? driver_error(r) : std::string("0 devices")) + ")");
    return nullptr;
  }
  auto* dev = new smelt_device();
  dev->cu = cu;
  dev->options = o;
  dev->headers = headers;
  int major = 0, minor = 0, gy = 0, gz = 0;
  char name[256] = {0};
  r = cu->cuDeviceGet(&dev->device, 0);
  if (r == CUDA_SUCCESS) r = cu->cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev->device);
  if (r == CUDA_SUCCESS) r = cu->cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev->device);
  if (r == CUDA_SUCCESS) r = cu->cuDeviceGetAttribute(&gy, CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y, dev->device);
  if (r == CUDA_SUCCESS) r = cu->cuDeviceGetAttribute(&gz, CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z, dev->device);
  if (r == CUDA_SUCCESS) r = cu->cuDeviceGetName(name, int(sizeof name - 1), dev->device);
  if (r == CUDA_SUCCESS) r = cu->cuDeviceTotalMem(&dev->total_memory, dev->device);
  if (r == CUDA_SUCCESS) r = cu->cuDevicePrimaryCtxRetain(&dev->ctx, dev->device);
  if (r == CUDA_SUCCESS) r = cu->cuCtxSetCurrent(dev->ctx);
  if (r == CUDA_SUCCESS) r = cu->cuStreamCreate(&dev->stream, CU_STREAM_NON_BLOCKING);
  void* page = r == CUDA_SUCCESS ? mmap(nullptr, size_t(sysconf(_SC_PAGESIZE)), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                                 : MAP_FAILED;
  if (r != CUDA_SUCCESS || page == MAP_FAILED) {
    set_error(err, errlen, "CUDA backend: cannot open device 0: " + (r != CUDA_SUCCESS ? driver_error(r) : std::string("no memory")));
    if (dev->ctx) cu->cuDevicePrimaryCtxRelease(dev->device);
    delete dev;
    return nullptr;
  }
  if (major < 7) {
    set_error(err, errlen, "CUDA backend: " + std::string(name) + " is compute capability " + std::to_string(major) + "." +
                               std::to_string(minor) + "; smelt needs 7.0 or later (independent thread scheduling)");
    munmap(page, size_t(sysconf(_SC_PAGESIZE)));
    cu->cuStreamDestroy(dev->stream);
    cu->cuDevicePrimaryCtxRelease(dev->device);
    delete dev;
    return nullptr;
  }
  dev->arch = major * 10 + minor;
  dev->name = name;
  dev->max_grid_y = unsigned(gy);
  dev->max_grid_z = unsigned(gz);
  dev->completion = (volatile uint64_t*)page;
  int pools = 0;
  CUmemoryPool pool = nullptr;
  if (cu->cuMemAllocAsync && cu->cuDeviceGetAttribute(&pools, CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED, dev->device) == CUDA_SUCCESS &&
      pools && cu->cuDeviceGetDefaultMemPool(&pool, dev->device) == CUDA_SUCCESS) {
    dev->pooled = true;
    // Freed memory stays in the pool rather than going back to the driver at every
    // synchronization; the engine's own cache bounds what is kept.
    unsigned long long keep = ~0ull;
    cu->cuMemPoolSetAttribute(pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &keep);
  }
  dev->completer = std::thread(complete_loop, dev);
  return dev;
}

SMELT_API void smelt_device_close(smelt_device* dev) {
  if (!dev) return;
  // The completion thread may be stuck waiting on a runaway kernel: leave it the device.
  if (dev->lost.load()) return;
  {
    std::lock_guard<std::mutex> lock(dev->done_mutex);
    dev->stopping = true;
  }
  dev->done_cv.notify_all();
  dev->completer.join();
  dev->cu->cuCtxSetCurrent(dev->ctx);
  for (auto& a : dev->arenas) dev->cu->cuMemFree(a.first);
  dev->cu->cuStreamDestroy(dev->stream);
  dev->cu->cuDevicePrimaryCtxRelease(dev->device);
  munmap((void*)dev->completion, size_t(sysconf(_SC_PAGESIZE)));
  delete dev;
}

SMELT_API int smelt_device_name(smelt_device* dev, char* out, size_t outlen) {
  if (!dev) return SMELT_ERROR;
  set_error(out, outlen, dev->name + " (CUDA, sm_" + std::to_string(dev->arch) + ")");
  return SMELT_OK;
}

SMELT_API int smelt_device_limits(smelt_device* dev, smelt_limits* out) {
  if (!dev || !out) return SMELT_ERROR;
  std::memset(out, 0, sizeof *out);
  out->max_buffer_length = dev->total_memory;
  out->max_threads_per_threadgroup = SMELT_MAX_THREADS_PER_THREADGROUP;
  out->max_threadgroup_memory = SMELT_MAX_THREADGROUP_MEMORY;
  out->max_buffer_slots = SMELT_MAX_BUFFER_SLOTS;
  out->simd_width = 32;
  out->unified_memory = 0;
  out->host_visible = 0;
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

SMELT_API const volatile uint64_t* smelt_device_completion_counter(smelt_device* dev) { return dev ? dev->completion : nullptr; }

SMELT_API smelt_buffer* smelt_buffer_new(smelt_device* dev, uint64_t length, char* err, size_t errlen) {
  if (!dev || lost(dev, err, errlen)) return nullptr;
  if (length > dev->total_memory) {
    set_error(err, errlen, "buffer of " + std::to_string(length) + " bytes is over the device's maximum of " + std::to_string(dev->total_memory));
    return nullptr;
  }
  return new_buffer(dev, length, err, errlen);
}

SMELT_API void* smelt_buffer_contents(smelt_buffer*) { return nullptr; }

SMELT_API uint64_t smelt_buffer_length(smelt_buffer* buf) { return buf ? buf->length : 0; }

SMELT_API void smelt_buffer_free(smelt_buffer* buf) {
  if (!buf) return;
  {
    std::lock_guard<std::mutex> lock(buf->dev->live_mutex);
    if (!buf->dev->buffers.erase(buf)) return;
    buf->dev->buffer_bytes -= buf->length;
  }
  if (buf->dev->lost.load()) return;  // the context is gone: nothing can be freed safely
  buffer_release(buf);  // a command buffer still using it holds its own reference
}

SMELT_API int smelt_buffer_write(smelt_buffer* buf, uint64_t offset, const void* src, uint64_t length, char* err, size_t errlen) {
  if (!buf || lost(buf->dev, err, errlen) || !in_buffer("smelt_buffer_write", buf, offset, src, length, err, errlen)) return SMELT_ERROR;
  if (!length) return SMELT_OK;
  smelt_device* dev = buf->dev;
  dev->cu->cuCtxSetCurrent(dev->ctx);
  // On the kernels' stream, then waited for: cuMemcpyHtoD from pageable memory returns once the
  // bytes are staged, with the DMA still queued on the legacy default stream, so a kernel launched
  // next on the non-blocking stream could read the buffer before the bytes arrived. Ordered on one
  // stream, kernels committed before the write finish first and kernels after it see the bytes;
  // the wait makes the copy done, and src free to reuse, when this returns.
  CUresult r = drain(dev, dev->cu->cuMemcpyHtoDAsync(buf->ptr + offset, src, size_t(length), dev->stream));
  if (r != CUDA_SUCCESS) {
    set_error(err, errlen, "smelt_buffer_write: " + driver_error(r));
    return SMELT_ERROR;
  }
  return SMELT_OK;
}

SMELT_API int smelt_buffer_read(smelt_buffer* buf, uint64_t offset, void* dst, uint64_t length, char* err, size_t errlen) {
  if (!buf || lost(buf->dev, err, errlen) || !in_buffer("smelt_buffer_read", buf, offset, dst, length, err, errlen)) return SMELT_ERROR;
  if (!length) return SMELT_OK;
  smelt_device* dev = buf->dev;
  dev->cu->cuCtxSetCurrent(dev->ctx);
  // On the kernels' stream, so that the copy comes after every kernel committed before it (and
  // after the buffer's zero fill and writes), whether or not the caller waited; cuMemcpyDtoH on
  // the legacy default stream was ordered only by the caller's wait.
  CUresult r = drain(dev, dev->cu->cuMemcpyDtoHAsync(dst, buf->ptr + offset, size_t(length), dev->stream));
  if (r != CUDA_SUCCESS) {
    set_error(err, errlen, "smelt_buffer_read: " + driver_error(r));
    return SMELT_ERROR;
  }
  return SMELT_OK;
}

// Device memory is not the caller's: the bytes are copied at this call (smelt.h allows it).
SMELT_API smelt_buffer* smelt_buffer_wrap(smelt_device* dev, void* memory, uint64_t length, char* err, size_t errlen) {
  if (!dev || lost(dev, err, errlen)) return nullptr;
  if (!memory) {
    set_error(err, errlen, "smelt_buffer_wrap: memory is NULL");
    return nullptr;
  }
  smelt_buffer* b = new_buffer(dev, length, err, errlen);
  if (b && smelt_buffer_write(b, 0, memory, length, err, errlen) != SMELT_OK) {
    smelt_buffer_free(b);
    return nullptr;
  }
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
  delete lib;  // pipelines made from it keep the module loaded
}

SMELT_API smelt_pipeline* smelt_pipeline_new(smelt_library* lib, const char* function_name, char* err, size_t errlen) {
  if (!lib || !function_name || lost(lib->dev, err, errlen)) return nullptr;
  std::string name = function_name, why;
  const KernelInfo* info = smelt_common::find_kernel(lib->kernels, name, why);
  if (!info) {
    set_error(err, errlen, why);
    return nullptr;
  }
  smelt_device* dev = lib->dev;
  auto kernel = std::make_shared<Kernel>();
  kernel->module = lib->module;
  kernel->info = *info;
  dev->cu->cuCtxSetCurrent(dev->ctx);
  CUresult r = dev->cu->cuModuleGetFunction(&kernel->function, lib->module->module, (std::string(kLauncherPrefix) + name).c_str());
  int threads = 0, shared = 0;
  if (r == CUDA_SUCCESS) r = dev->cu->cuFuncGetAttribute(&threads, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, kernel->function);
  if (r == CUDA_SUCCESS) r = dev->cu->cuFuncGetAttribute(&shared, CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, kernel->function);
  if (r != CUDA_SUCCESS) {
    set_error(err, errlen, "CUDA backend: kernel " + name + ": " + driver_error(r));
    return nullptr;
  }
  kernel->max_threads = uint32_t(std::min<int>(threads, int(SMELT_MAX_THREADS_PER_THREADGROUP)));
  kernel->static_shared = uint32_t(shared);
  auto* p = new smelt_pipeline{dev, kernel};
  std::lock_guard<std::mutex> lock(dev->live_mutex);
  dev->pipelines.insert(p);
  return p;
}

SMELT_API int smelt_pipeline_info_get(smelt_pipeline* pipe, smelt_pipeline_info* out) {
  if (!pipe || !out) return SMELT_ERROR;
  std::memset(out, 0, sizeof *out);
  out->max_threads_per_threadgroup = pipe->kernel->max_threads;
  out->thread_execution_width = 32;
  out->static_threadgroup_memory = pipe->kernel->static_shared;
  out->buffer_mask = pipe->kernel->info.buffer_mask;
  out->threadgroup_mask = pipe->kernel->info.threadgroup_mask;
  return SMELT_OK;
}

SMELT_API void smelt_pipeline_free(smelt_pipeline* pipe) {
  if (!pipe) return;
  {
    std::lock_guard<std::mutex> lock(pipe->dev->live_mutex);
    if (!pipe->dev->pipelines.erase(pipe)) return;
  }
  delete pipe;  // a command buffer using it holds its own reference to the kernel
}

SMELT_API smelt_cmd* smelt_cmd_new(smelt_device* dev, char* err, size_t errlen) {
  return smelt_common::new_command<smelt_cmd>(dev, err, errlen, lost);
}

SMELT_API int smelt_cmd_encode(smelt_cmd* cmd, const void* records, size_t length, char* err, size_t errlen) {
  if (!cmd || lost(cmd->dev, err, errlen)) return SMELT_ERROR;
  smelt_record_env env{cmd->dev, SMELT_MAX_THREADGROUP_MEMORY, facts_of, length_of, grid_fits};
  if (!smelt_common::accept_command_records(cmd, records, length, env, err, errlen)) return SMELT_ERROR;
  smelt_dispatch r;
  // One stream runs dispatches in order, so a barrier record needs nothing more.
  for (size_t at = 0; smelt_records_next(records, length, &at, &r);)
    if (r.kind != SMELT_REC_BARRIER) cmd->dispatches.push_back(to_dispatch(cmd, r));
  return SMELT_OK;
}

SMELT_API uint64_t smelt_cmd_commit(smelt_cmd* cmd, char* err, size_t errlen) {
  if (!cmd) return 0;
  if (cmd->state != SMELT_CMD_RECORDING) {
    set_error(err, errlen, "commit: the command buffer was already committed");
    return 0;
  }
  smelt_device* dev = cmd->dev;
  if (lost(dev, err, errlen)) return 0;
  close_open(cmd);
  const Driver* cu = dev->cu;
  cu->cuCtxSetCurrent(dev->ctx);
  std::string error;
  CUresult r = CUDA_SUCCESS;
  if (!cmd->arena.empty()) {
    {
      std::lock_guard<std::mutex> lock(dev->done_mutex);
      for (size_t i = 0; i < dev->arenas.size(); ++i)
        if (dev->arenas[i].second >= cmd->arena.size()) {
          cmd->arena_device = dev->arenas[i].first;
          cmd->arena_capacity = dev->arenas[i].second;
          dev->arenas.erase(dev->arenas.begin() + long(i));
          break;
        }
    }
    if (!cmd->arena_device) {
      // Powers of two from 4 KiB, so that arenas fit later command buffers of similar size.
      cmd->arena_capacity = 4096;
      while (cmd->arena_capacity < cmd->arena.size()) cmd->arena_capacity *= 2;
      r = cu->cuMemAlloc(&cmd->arena_device, cmd->arena_capacity);
    }
    if (r == CUDA_SUCCESS) r = cu->cuMemcpyHtoDAsync(cmd->arena_device, cmd->arena.data(), cmd->arena.size(), dev->stream);
    if (r != CUDA_SUCCESS) error = "cannot upload the command buffer's constant bytes: " + driver_error(r);
  }
  for (auto& d : cmd->dispatches) {
    if (!error.empty()) break;
    if (!d.groups[0] || !d.groups[1] || !d.groups[2]) continue;
    for (auto& b : d.bytes) d.launch.buffers[b.first] = cmd->arena_device + b.second;
    void* params[] = {&d.launch};
    r = cu->cuLaunchKernel(d.kernel->function, d.groups[0], d.groups[1], d.groups[2], d.block[0], d.block[1], d.block[2], d.shared_bytes,
                           dev->stream, params, nullptr);
    // Debug devices run each kernel alone, so that a fault names its kernel.
    if (r == CUDA_SUCCESS && dev->options.debug) r = cu->cuStreamSynchronize(dev->stream);
    if (r != CUDA_SUCCESS) error = "kernel " + d.kernel->info.name + " failed: " + driver_error(r);
  }
  // The event follows whatever was queued, even when a later launch failed: the completion thread
  // releases the buffers and the arena only once it has passed, never under a kernel still running.
  r = cu->cuEventCreate(&cmd->event, CU_EVENT_DISABLE_TIMING);
  if (r == CUDA_SUCCESS) r = cu->cuEventRecord(cmd->event, dev->stream);
  if (r != CUDA_SUCCESS) {
    if (cmd->event) cu->cuEventDestroy(cmd->event);
    cmd->event = nullptr;
    if (error.empty()) error = "cannot record the completion event: " + driver_error(r);
  }
  std::lock_guard<std::mutex> lock(dev->done_mutex);
  cmd->sequence = ++dev->next_sequence;
  cmd->state = SMELT_CMD_COMMITTED;
  if (!error.empty()) cmd->error = error;
  dev->pending.push_back(cmd);
  dev->done_cv.notify_all();
  return cmd->sequence;
}

SMELT_API int smelt_cmd_status(smelt_cmd* cmd, char* err, size_t errlen) {
  if (!cmd) return SMELT_ERROR;
  std::lock_guard<std::mutex> lock(cmd->dev->done_mutex);
  if (cmd->state == SMELT_CMD_RECORDING) return SMELT_CMD_RECORDING;
  std::string error;
  int s = report(cmd, error);
  if (s == SMELT_ERROR) set_error(err, errlen, error);
  return s;
}

SMELT_API int smelt_cmd_wait(smelt_cmd* cmd, uint64_t timeout_ms, char* err, size_t errlen) {
  if (!cmd) return SMELT_ERROR;
  smelt_device* dev = cmd->dev;
  std::unique_lock<std::mutex> lock(dev->done_mutex);
  if (cmd->state == SMELT_CMD_RECORDING) {
    set_error(err, errlen, "wait: the command buffer was never committed");
    return SMELT_ERROR;
  }
  auto finished = [cmd, dev] { return cmd->released || dev->lost.load(); };
  if (timeout_ms == 0) dev->done_cv.wait(lock, finished);
  else if (!dev->done_cv.wait_for(lock, std::chrono::milliseconds(timeout_ms), finished)) return SMELT_CMD_TIMEOUT;
  std::string error;
  int s = report(cmd, error);
  if (s == SMELT_ERROR) set_error(err, errlen, error);
  return s;
}

SMELT_API int smelt_cmd_abandon(smelt_cmd* cmd, char* err, size_t errlen) {
  if (!cmd) return SMELT_ERROR;
  smelt_device* dev = cmd->dev;
  std::lock_guard<std::mutex> lock(dev->done_mutex);
  if (cmd->state == SMELT_CMD_RECORDING) {
    set_error(err, errlen, "abandon: the command buffer was never committed");
    return SMELT_ERROR;
  }
  if (cmd->released) return SMELT_OK;
  // A kernel cannot be stopped: the device is lost, and waiters give up with this text.
  lose(dev, "command buffer #" + std::to_string(cmd->sequence) + " (kernels " + kernel_names(cmd) + ") was abandoned: it did not finish");
  dev->done_cv.notify_all();
  set_error(err, errlen, dev->lost_text);
  return SMELT_ERROR;
}

SMELT_API void smelt_cmd_free(smelt_cmd* cmd) {
  if (!cmd) return;
  smelt_device* dev = cmd->dev;
  close_open(cmd);
  {
    std::unique_lock<std::mutex> lock(dev->done_mutex);
    if (cmd->state == SMELT_CMD_RECORDING) {
      for (auto* b : cmd->retained) buffer_release(b);
      cmd->retained.clear();
    } else if (!cmd->released) {
      if (dev->lost.load()) return;  // the completion thread still holds it: leaked with the device
      dev->done_cv.wait(lock, [cmd, dev] { return cmd->released || dev->lost.load(); });
      if (!cmd->released) return;
    }
  }
  {
    std::lock_guard<std::mutex> lock(dev->live_mutex);
    --dev->command_buffers;
  }
  delete cmd;
}

}  // extern "C"

// Opens libcuda and libnvrtc at run time and resolves the entry points cuda_api.h declares.
#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <vector>

#include "cuda_api.h"

namespace smelt_cuda {
namespace {

template <class F> bool resolve(void* lib, const char* name, F& fn, std::string& missing) {
  fn = reinterpret_cast<F>(dlsym(lib, name));
  if (!fn) missing += (missing.empty() ? "" : ", ") + std::string(name);
  return fn != nullptr;
}

}  // namespace

const Driver* driver(std::string& why) {
  static Driver d;
  static std::string error;
  static std::once_flag once;
  static bool ok = false;
  std::call_once(once, [] {
    void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char* e = dlerror();
      error = "cannot open libcuda.so.1, the NVIDIA driver's library (" + std::string(e ? e : "not found") + ")";
      return;
    }
    std::string missing;
    // The _v2 entry points are the ones with 64-bit sizes and device pointers.
    resolve(lib, "cuInit", d.cuInit, missing);
    resolve(lib, "cuDriverGetVersion", d.cuDriverGetVersion, missing);
    resolve(lib, "cuDeviceGetCount", d.cuDeviceGetCount, missing);
    resolve(lib, "cuDeviceGet", d.cuDeviceGet, missing);
    resolve(lib, "cuDeviceGetName", d.cuDeviceGetName, missing);
    resolve(lib, "cuDeviceGetAttribute", d.cuDeviceGetAttribute, missing);
    resolve(lib, "cuDeviceTotalMem_v2", d.cuDeviceTotalMem, missing);
    resolve(lib, "cuDevicePrimaryCtxRetain", d.cuDevicePrimaryCtxRetain, missing);
    resolve(lib, "cuDevicePrimaryCtxRelease_v2", d.cuDevicePrimaryCtxRelease, missing);
    resolve(lib, "cuCtxSetCurrent", d.cuCtxSetCurrent, missing);
    resolve(lib, "cuStreamCreate", d.cuStreamCreate, missing);
    resolve(lib, "cuStreamDestroy_v2", d.cuStreamDestroy, missing);
    resolve(lib, "cuStreamSynchronize", d.cuStreamSynchronize, missing);
    resolve(lib, "cuEventCreate", d.cuEventCreate, missing);
    resolve(lib, "cuEventRecord", d.cuEventRecord, missing);
    resolve(lib, "cuEventSynchronize", d.cuEventSynchronize, missing);
    resolve(lib, "cuEventDestroy_v2", d.cuEventDestroy, missing);
    resolve(lib, "cuMemAlloc_v2", d.cuMemAlloc, missing);
    resolve(lib, "cuMemFree_v2", d.cuMemFree, missing);
    // cuMemsetD8Async was 64-bit from the start: it has no _v2.
    resolve(lib, "cuMemsetD8Async", d.cuMemsetD8Async, missing);
    resolve(lib, "cuMemcpyHtoDAsync_v2", d.cuMemcpyHtoDAsync, missing);
    resolve(lib, "cuMemcpyDtoHAsync_v2", d.cuMemcpyDtoHAsync, missing);
    resolve(lib, "cuModuleLoadData", d.cuModuleLoadData, missing);
    resolve(lib, "cuModuleUnload", d.cuModuleUnload, missing);
    resolve(lib, "cuModuleGetFunction", d.cuModuleGetFunction, missing);
    resolve(lib, "cuFuncGetAttribute", d.cuFuncGetAttribute, missing);
    resolve(lib, "cuLaunchKernel", d.cuLaunchKernel, missing);
    resolve(lib, "cuGetErrorName", d.cuGetErrorName, missing);
    resolve(lib, "cuGetErrorString", d.cuGetErrorString, missing);
    if (!missing.empty()) {
      error = "libcuda.so.1 lacks " + missing + " (the driver is too old)";
      return;
    }
    std::string optional;
    if (!resolve(lib, "cuMemAllocAsync", d.cuMemAllocAsync, optional) || !resolve(lib, "cuMemFreeAsync", d.cuMemFreeAsync, optional) ||
        !resolve(lib, "cuDeviceGetDefaultMemPool", d.cuDeviceGetDefaultMemPool, optional) ||
        !resolve(lib, "cuMemPoolSetAttribute", d.cuMemPoolSetAttribute, optional))
      d.cuMemAllocAsync = nullptr;
    ok = true;
  });
  if (!ok) why = error;
  return ok ? &d : nullptr;
}

std::string driver_error(CUresult r) {
  std::string why;
  const Driver* d = driver(why);
  const char* name = nullptr;
  const char* text = nullptr;
  if (d) {
    d->cuGetErrorName(r, &name);
    d->cuGetErrorString(r, &text);
  }
  std::string out = name ? name : "CUDA error " + std::to_string(r);
  if (text) out += std::string(" (") + text + ")";
  return out;
}

const Nvrtc* nvrtc(std::string& why) {
  static Nvrtc n;
  static std::string error;
  static std::once_flag once;
  static bool ok = false;
  std::call_once(once, [] {
    const char* env = std::getenv("SMELT_NVRTC");
    std::vector<std::string> names;
    if (env && *env) names.push_back(env);
    else names = {"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"};
    void* lib = nullptr;
    std::string tried;
    for (auto& name : names) {
      lib = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (lib) {
        n.path = name;
        break;
      }
      const char* e = dlerror();
      tried += "\n  " + (e ? std::string(e) : name + ": not found");
    }
    if (!lib) {
      error = "cannot open NVRTC, CUDA's run-time compiler (set SMELT_NVRTC to its path, or add its directory to "
              "LD_LIBRARY_PATH):" + tried;
      return;
    }
    std::string missing;
    resolve(lib, "nvrtcVersion", n.nvrtcVersion, missing);
    resolve(lib, "nvrtcGetErrorString", n.nvrtcGetErrorString, missing);
    resolve(lib, "nvrtcCreateProgram", n.nvrtcCreateProgram, missing);
    resolve(lib, "nvrtcDestroyProgram", n.nvrtcDestroyProgram, missing);
    resolve(lib, "nvrtcCompileProgram", n.nvrtcCompileProgram, missing);
    resolve(lib, "nvrtcGetProgramLogSize", n.nvrtcGetProgramLogSize, missing);
    resolve(lib, "nvrtcGetProgramLog", n.nvrtcGetProgramLog, missing);
    resolve(lib, "nvrtcGetCUBINSize", n.nvrtcGetCUBINSize, missing);
    resolve(lib, "nvrtcGetCUBIN", n.nvrtcGetCUBIN, missing);
    resolve(lib, "nvrtcGetPTXSize", n.nvrtcGetPTXSize, missing);
    resolve(lib, "nvrtcGetPTX", n.nvrtcGetPTX, missing);
    if (!missing.empty()) {
      error = n.path + " lacks " + missing;
      return;
    }
    ok = true;
  });
  if (!ok) why = error;
  return ok ? &n : nullptr;
}

}  // namespace smelt_cuda

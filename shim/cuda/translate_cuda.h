// MSL source to CUDA C++ for NVRTC: the CUDA back end of the MSL translator (the front end is
// shim/translate/msl_front.h). Kernels become device functions, each called by an extern "C"
// __global__ launcher named kLauncherPrefix + its host name, which turns the one launch struct
// (__smelt_cuda_launch, shim/cuda/msl/metal_stdlib) and CUDA's thread indices into the kernel's
// arguments.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace smelt_cuda {

constexpr const char* kLauncherPrefix = "__smelt_k_";

struct KernelInfo {
  std::string name;  // the name pipelines ask for ([[host_name]] or the function's)
  uint32_t buffer_mask = 0;
  uint32_t threadgroup_mask = 0;
};

struct Translation {
  bool ok = false;
  std::string cuda;   // the CUDA C++ source
  std::string error;  // the front end's "kernel.metal:LINE: error: ..." lines when !ok
  std::vector<KernelInfo> kernels;
};

// version: smelt_msl::kMslVersion30 or kMslVersion31, the language the kernels are compiled as.
Translation translate_msl(const std::string& msl, int version);

}  // namespace smelt_cuda

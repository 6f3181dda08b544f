// MSL source to a C++ module for the host backend: kernel signatures become native launchers,
// address spaces become plain C++, and constructs that Metal rejects are rejected here too (by the
// front end, shim/translate/msl_front.h; translate.cpp is the C++ back end).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace smelt_host {

struct KernelInfo {
  std::string name;           // the name pipelines ask for ([[host_name]] or the function's)
  bool needs_fibers = false;  // uses barriers, SIMD-group functions or simdgroup matrices
  uint32_t buffer_mask = 0;
  uint32_t threadgroup_mask = 0;
};

struct Translation {
  bool ok = false;
  std::string cpp;    // the module's C++ source
  std::string error;  // the front end's "kernel.metal:LINE: error: ..." lines when !ok
  std::vector<KernelInfo> kernels;
};

// version: smelt_msl::kMslVersion30 or kMslVersion31, the language the kernels are compiled as.
Translation translate_msl(const std::string& msl, bool bounds_checks, int version);

}  // namespace smelt_host

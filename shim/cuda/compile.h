// NVRTC compilation of translated kernels, with a disk cache keyed by the source, the headers,
// the GPU architecture and NVRTC's version, so that a second run compiles nothing.
#pragma once

#include <string>
#include <vector>

namespace smelt_cuda {

// The compatibility headers NVRTC is given in memory (metal_stdlib and the metal_core it includes).
struct Headers {
  std::vector<std::string> names, texts;
  std::string hash;
};

// Reads the headers from the first of the ':'-separated directories that holds each one.
bool load_headers(const std::string& dirs, Headers& out, std::string& why);

struct Compiled {
  bool ok = false;
  bool cache_hit = false;
  std::string image;  // a cubin for the architecture
  std::string error;  // NVRTC's messages, with the MSL source's line numbers
};

// arch: the compute capability as major * 10 + minor (90 for sm_90). cache_dir empty: no cache.
Compiled compile_cuda(const std::string& source, const Headers& headers, int arch, bool fast_math,
                      const std::string& cache_dir);

}  // namespace smelt_cuda

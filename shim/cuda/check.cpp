// smelt-cuda-check: translates MSL files and compiles them with NVRTC for a GPU architecture, with
// no GPU and no driver, exactly as the CUDA backend would (scripts/check-cuda.sh runs it over
// every kernel smelt has).
//
//   smelt-cuda-check [--include DIRS] [--arch 90] [--msl 3.0|3.1] FILE...
//
// Prints one line per file that fails, with NVRTC's messages, and a summary; exits 1 if any failed.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "compile.h"
#include "msl_front.h"
#include "translate_cuda.h"

int main(int argc, char** argv) {
  std::string include = "shim/cuda/msl:shim/host/msl";
  int arch = 90;
  int version = smelt_msl::kMslVersion31;
  int files = 0, failed = 0, kernels = 0;
  smelt_cuda::Headers headers;
  bool have_headers = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--include" && i + 1 < argc) {
      include = argv[++i];
      have_headers = false;
      continue;
    }
    if (a == "--arch" && i + 1 < argc) {
      arch = std::atoi(argv[++i]);
      continue;
    }
    if (a == "--msl" && i + 1 < argc) {
      std::string v = argv[++i];
      version = v == "3.0" ? smelt_msl::kMslVersion30 : smelt_msl::kMslVersion31;
      continue;
    }
    if (!have_headers) {
      std::string why;
      if (!smelt_cuda::load_headers(include, headers, why)) {
        std::fprintf(stderr, "smelt-cuda-check: %s\n", why.c_str());
        return 2;
      }
      have_headers = true;
    }
    std::ifstream in(a, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "smelt-cuda-check: cannot read %s\n", a.c_str());
      return 2;
    }
    std::stringstream ss;
    ss << in.rdbuf();
    ++files;
    smelt_cuda::Translation t = smelt_cuda::translate_msl(ss.str(), version);
    if (!t.ok) {
      // What the front end refuses, every backend refuses (the tests expect those errors).
      std::printf("REFUSED %s\n%s\n", a.c_str(), t.error.c_str());
      continue;
    }
    smelt_cuda::Compiled c = smelt_cuda::compile_cuda(t.cuda, headers, arch, false, "");
    if (!c.ok) {
      ++failed;
      std::printf("FAIL %s\n%s\n", a.c_str(), c.error.c_str());
      if (std::getenv("SMELT_CUDA_CHECK_SOURCE")) std::printf("--- translated ---\n%s\n", t.cuda.c_str());
      continue;
    }
    kernels += int(t.kernels.size());
  }
  std::printf("smelt-cuda-check: %d files, %d failed, %d kernels compiled for sm_%d\n", files, failed, kernels, arch);
  return failed ? 1 : 0;
}

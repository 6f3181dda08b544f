// smelt-cuda-check: translates MSL files and compiles them with NVRTC for a GPU architecture, with
// no GPU and no driver, exactly as the CUDA backend would (scripts/check-cuda.sh runs it over
// every kernel smelt has).
//
//   smelt-cuda-check [--include DIRS] [--arch 90] [--msl 3.0|3.1] [--jobs N] [--cubin DIR] FILE...
//
// --cubin DIR writes each file's cubin to DIR/<file name>.cubin, for reading the machine code
// (registers, loads, spills) with nvdisasm, which also needs no GPU.
// Files named *.msl30.metal (as SMELT_DUMP_MSL writes them) are compiled as MSL 3.0. Prints each
// file that fails with NVRTC's messages, then a summary; exits 1 if any failed.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "compile.h"
#include "msl_front.h"
#include "translate_cuda.h"

namespace {

struct Result {
  std::string text;  // what to print for the file, if anything
  bool failed = false, refused = false;
  int kernels = 0;
};

Result check_file(const std::string& path, const smelt_cuda::Headers& headers, int arch, int version,
                  const std::string& cubin_dir) {
  Result r;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    r.failed = true;
    r.text = "FAIL " + path + "\ncannot read the file\n";
    return r;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  // SMELT_DUMP_MSL names sources compiled as MSL 3.0 *.msl30.metal.
  bool v30 = path.find(".msl30.") != std::string::npos;
  smelt_cuda::Translation t = smelt_cuda::translate_msl(ss.str(), v30 ? smelt_msl::kMslVersion30 : version);
  if (!t.ok) {
    // What the front end refuses, every backend refuses (tests compile such sources on purpose).
    r.refused = true;
    r.text = "REFUSED " + path + "\n" + t.error + "\n";
    return r;
  }
  smelt_cuda::Compiled c = smelt_cuda::compile_cuda(t.cuda, headers, arch, false, "");
  if (!c.ok) {
    r.failed = true;
    r.text = "FAIL " + path + "\n" + c.error + "\n";
    if (std::getenv("SMELT_CUDA_CHECK_SOURCE")) r.text += "--- translated ---\n" + t.cuda + "\n";
    return r;
  }
  r.kernels = int(t.kernels.size());
  if (!cubin_dir.empty()) {
    std::string name = path.substr(path.find_last_of('/') + 1);
    std::ofstream out(cubin_dir + "/" + name + ".cubin", std::ios::binary);
    out.write(c.image.data(), std::streamsize(c.image.size()));
    if (!out) {
      r.failed = true;
      r.text = "FAIL " + path + "\ncannot write its cubin in " + cubin_dir + "\n";
    }
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::string include = "shim/cuda/msl:shim/host/msl";
  int arch = 90;
  int version = smelt_msl::kMslVersion31;
  unsigned jobs = std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::string> paths;
  std::string cubin_dir;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--include" && i + 1 < argc) include = argv[++i];
    else if (a == "--arch" && i + 1 < argc) arch = std::atoi(argv[++i]);
    else if (a == "--jobs" && i + 1 < argc) jobs = unsigned(std::max(1, std::atoi(argv[++i])));
    else if (a == "--msl" && i + 1 < argc) version = std::string(argv[++i]) == "3.0" ? smelt_msl::kMslVersion30 : smelt_msl::kMslVersion31;
    else if (a == "--cubin" && i + 1 < argc) cubin_dir = argv[++i];
    else paths.push_back(a);
  }
  smelt_cuda::Headers headers;
  std::string why;
  if (!smelt_cuda::load_headers(include, headers, why)) {
    std::fprintf(stderr, "smelt-cuda-check: %s\n", why.c_str());
    return 2;
  }
  std::vector<Result> results(paths.size());
  std::atomic<size_t> next{0};
  std::vector<std::thread> workers;
  for (unsigned w = 0; w < jobs; ++w)
    workers.emplace_back([&] {
      for (size_t i; (i = next.fetch_add(1)) < paths.size();) results[i] = check_file(paths[i], headers, arch, version, cubin_dir);
    });
  for (auto& w : workers) w.join();
  int failed = 0, refused = 0, kernels = 0;
  for (auto& r : results) {
    std::fputs(r.text.c_str(), stdout);
    failed += r.failed;
    refused += r.refused;
    kernels += r.kernels;
  }
  std::printf("smelt-cuda-check: %zu files, %d failed, %d refused by the front end, %d kernels compiled for sm_%d\n",
              paths.size(), failed, refused, kernels, arch);
  return failed ? 1 : 0;
}

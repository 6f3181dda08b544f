// Compiles translated kernels with NVRTC into cubins, cached on disk.
#include "compile.h"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "cuda_api.h"

namespace smelt_cuda {
namespace {

bool read_file(const std::string& path, std::string& out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::stringstream ss;
  ss << in.rdbuf();
  out = ss.str();
  return true;
}

// Two 64-bit FNV-1a hashes from different starting points: a 128-bit key, so that distinct
// sources practically never share a cache entry.
std::string hash_hex(const std::string& data) {
  unsigned long long a = 0xcbf29ce484222325ull, b = 0x84222325cbf29ce4ull;
  for (unsigned char c : data) {
    a = (a ^ c) * 0x100000001b3ull;
    b = (b ^ c) * 0x100000001b3ull;
    b ^= b >> 29;
  }
  char out[33];
  std::snprintf(out, sizeof out, "%016llx%016llx", a, b);
  return out;
}

bool make_dirs(const std::string& path) {
  for (size_t at = 1; at <= path.size(); ++at) {
    if (at != path.size() && path[at] != '/') continue;
    std::string part = path.substr(0, at);
    if (mkdir(part.c_str(), 0755) != 0 && errno != EEXIST) return false;
  }
  return true;
}

// Writes next to the final path and renames, so that a reader never sees half a file.
void store(const std::string& path, const std::string& bytes) {
  static std::atomic<unsigned> counter{0};
  std::string tmp = path + ".tmp-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
  {
    std::ofstream out(tmp, std::ios::binary);
    out.write(bytes.data(), std::streamsize(bytes.size()));
    if (!out) {
      unlink(tmp.c_str());
      return;
    }
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) unlink(tmp.c_str());
}

// A cubin begins with the ELF magic; anything else in the cache is not ours.
bool looks_like_cubin(const std::string& image) { return image.size() > 4 && image.compare(0, 4, "\x7f" "ELF") == 0; }

// NVRTC writes "kernel.metal(12): error: ..."; every backend's messages say "kernel.metal:12: error:
// ...", as Apple's compiler and the host's do.
std::string gcc_style(const std::string& log) {
  std::string out;
  for (size_t i = 0; i < log.size();) {
    if (log[i] == '(') {
      size_t j = i + 1;
      while (j < log.size() && log[j] >= '0' && log[j] <= '9') ++j;
      if (j > i + 1 && log.compare(j, 3, "): ") == 0) {
        out += ":" + log.substr(i + 1, j - i - 1) + ": ";
        i = j + 3;
        continue;
      }
    }
    out += log[i++];
  }
  return out;
}

}  // namespace

bool load_headers(const std::string& dirs, Headers& out, std::string& why) {
  out = Headers{};
  std::string all;
  for (const char* name : {"metal_stdlib", "metal_core", "smelt_mma", "smelt_threads"}) {
    std::string text;
    bool found = false;
    std::stringstream list(dirs);
    for (std::string dir; !found && std::getline(list, dir, ':');)
      if (!dir.empty()) found = read_file(dir + "/" + name, text);
    if (!found) {
      why = "no " + std::string(name) + " in " + (dirs.empty() ? "(no include directories)" : dirs);
      return false;
    }
    out.names.push_back(name);
    out.texts.push_back(text);
    all += text + "\n--\n";
  }
  out.hash = hash_hex(all);
  return true;
}

Compiled compile_cuda(const std::string& source, const Headers& headers, int arch, bool fast_math,
                      const std::string& cache_dir) {
  Compiled r;
  std::string why;
  const Nvrtc* nv = nvrtc(why);
  if (!nv) {
    r.error = "CUDA backend: " + why;
    return r;
  }
  int major = 0, minor = 0;
  nv->nvrtcVersion(&major, &minor);
  std::vector<std::string> options = {"--gpu-architecture=sm_" + std::to_string(arch), "-default-device", "-std=c++17",
                                      "-lineinfo", "-w"};
  // Metal keeps fast math off unless asked, and so no contraction into fma either (as the host).
  if (fast_math) options.push_back("--use_fast_math");
  else options.push_back("--fmad=false");

  std::string key_text = source + "\n--\n" + headers.hash + "\nnvrtc " + std::to_string(major) + "." + std::to_string(minor);
  for (auto& o : options) key_text += " " + o;
  std::string dir = cache_dir.empty() ? "" : cache_dir + "/cuda";
  std::string path = dir.empty() ? "" : dir + "/" + hash_hex(key_text) + ".cubin";
  if (!path.empty() && read_file(path, r.image) && looks_like_cubin(r.image)) {
    r.ok = r.cache_hit = true;
    return r;
  }

  nvrtcProgram prog = nullptr;
  std::vector<const char*> hnames, htexts, opts;
  for (size_t i = 0; i < headers.names.size(); ++i) {
    hnames.push_back(headers.names[i].c_str());
    htexts.push_back(headers.texts[i].c_str());
  }
  for (auto& o : options) opts.push_back(o.c_str());
  nvrtcResult rc = nv->nvrtcCreateProgram(&prog, source.c_str(), "smelt.cu", int(hnames.size()), htexts.data(), hnames.data());
  if (rc != 0) {
    r.error = std::string("CUDA backend: nvrtcCreateProgram failed: ") + nv->nvrtcGetErrorString(rc);
    return r;
  }
  rc = nv->nvrtcCompileProgram(prog, int(opts.size()), opts.data());
  size_t log_size = 0;
  nv->nvrtcGetProgramLogSize(prog, &log_size);
  std::string log(log_size, '\0');
  if (log_size) nv->nvrtcGetProgramLog(prog, &log[0]);
  while (!log.empty() && (log.back() == '\0' || log.back() == '\n')) log.pop_back();
  if (rc != 0) {
    r.error = "MSL compilation failed (NVRTC " + std::to_string(major) + "." + std::to_string(minor) + ", sm_" +
              std::to_string(arch) + "):\n" + gcc_style(log);
    nv->nvrtcDestroyProgram(&prog);
    return r;
  }
  size_t size = 0;
  nv->nvrtcGetCUBINSize(prog, &size);
  r.image.assign(size, '\0');
  if (size) nv->nvrtcGetCUBIN(prog, &r.image[0]);
  nv->nvrtcDestroyProgram(&prog);
  if (!looks_like_cubin(r.image)) {
    r.error = "CUDA backend: NVRTC produced no cubin for sm_" + std::to_string(arch);
    return r;
  }
  if (!dir.empty() && make_dirs(dir)) store(path, r.image);
  r.ok = true;
  return r;
}

}  // namespace smelt_cuda

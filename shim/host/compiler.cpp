// Turns translated C++ into a loaded native module: runs the configured compiler (zig cc by
// default) once per distinct source, keeping the result in an on-disk cache keyed by the source,
// the compiler command, its flags and the compatibility headers. Cache entries are written under
// a temporary name and renamed, so a crash or a concurrent process never sees half a file.
//
// A module is trusted only with a checksum beside it (KEY.sum, written after KEY.so is in place):
// a file damaged later (a full disk, a copy cut short, a bad sector) would otherwise fail to load,
// or crash the loader, on every run until deleted by hand. An entry without a matching checksum is
// compiled again and replaced. Two processes compiling one kernel at once both succeed: each
// renames its own complete files into place, and a reader that sees the module of one and the
// checksum of the other (or none yet) compiles once more rather than load something unverified.
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>

#include "host.h"

extern char** environ;

namespace smelt_host {

Module::~Module() {
  if (handle) dlclose(handle);
}

std::string hash_hex(const std::string& data) {
  // Two FNV-1a passes with different offsets: 128 bits, plenty to key a cache.
  uint64_t h1 = 0xcbf29ce484222325ull, h2 = 0x84222325cbf29ce4ull;
  for (unsigned char c : data) {
    h1 = (h1 ^ c) * 0x100000001b3ull;
    h2 = (h2 ^ c) * 0x100000001b3ull;
    h2 ^= h2 >> 29;
  }
  char out[33];
  std::snprintf(out, sizeof out, "%016llx%016llx", (unsigned long long)h1, (unsigned long long)h2);
  return out;
}

namespace {

std::vector<std::string> split_words(const std::string& s) {
  std::vector<std::string> words;
  std::istringstream in(s);
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

bool make_dirs(const std::string& path) {
  for (size_t i = 1; i <= path.size(); ++i)
    if (i == path.size() || path[i] == '/') {
      std::string part = path.substr(0, i);
      if (mkdir(part.c_str(), 0755) != 0 && errno != EEXIST) return false;
    }
  return true;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool write_file(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out << data;
  return bool(out);
}

// Checksum of a compiled module's bytes: its length and a hash over 8-byte words, so that checking
// a cache hit costs far less than the dlopen it guards.
std::string module_checksum(const std::string& bytes) {
  uint64_t h1 = 0x9e3779b97f4a7c15ull ^ bytes.size(), h2 = 0xc2b2ae3d27d4eb4full;
  size_t n = bytes.size() / 8 * 8;
  for (size_t i = 0; i < n; i += 8) {
    uint64_t w;
    std::memcpy(&w, bytes.data() + i, 8);
    h1 = (h1 ^ w) * 0x100000001b3ull;
    h1 ^= h1 >> 32;
    h2 = (h2 + w) * 0xff51afd7ed558ccdull;
    h2 ^= h2 >> 29;
  }
  for (size_t i = n; i < bytes.size(); ++i) h1 = (h1 ^ (unsigned char)bytes[i]) * 0x100000001b3ull;
  char out[64];
  std::snprintf(out, sizeof out, "%zu %016llx%016llx\n", bytes.size(), (unsigned long long)h1, (unsigned long long)h2);
  return out;
}

// Whether the module at path is the one its checksum file describes.
bool verified(const std::string& path, const std::string& sum_path) {
  std::ifstream sum(sum_path, std::ios::binary);
  if (!sum) return false;
  std::stringstream expected;
  expected << sum.rdbuf();
  std::ifstream so(path, std::ios::binary);
  if (!so) return false;
  std::stringstream bytes;
  bytes << so.rdbuf();
  return expected.str() == module_checksum(bytes.str());
}

// A compile killed midway leaves its tmp-* files behind. Those older than this are removed; a
// younger one may belong to a compile still running in another process.
constexpr time_t kStaleTmpSeconds = 15 * 60;

// Removes stale tmp-* files from the cache directory, once per directory per process.
void clean_stale_tmp(const std::string& dir) {
  static std::mutex m;
  static std::set<std::string> cleaned;
  {
    std::lock_guard<std::mutex> lock(m);
    if (!cleaned.insert(dir).second) return;
  }
  DIR* d = opendir(dir.c_str());
  if (!d) return;
  time_t now = time(nullptr);
  while (dirent* e = readdir(d)) {
    if (std::strncmp(e->d_name, "tmp-", 4) != 0) continue;
    std::string path = dir + "/" + e->d_name;
    struct stat st;
    if (lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && now - st.st_mtime > kStaleTmpSeconds) unlink(path.c_str());
  }
  closedir(d);
}

// Runs argv with stdout and stderr into log; returns the exit status, or -1 if it did not start.
int run(const std::vector<std::string>& argv, const std::string& log) {
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid;
  int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return -1;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

std::vector<std::string> flags(const Options& o, bool fast_math) {
  std::vector<std::string> f = {"-x", "c++", "-std=c++17", "-O2", "-fPIC", "-shared", "-fno-exceptions",
                                "-fno-rtti", "-fno-threadsafe-statics", "-fvisibility=hidden",
                                "-fno-math-errno", "-w", "-I", o.include};
  // Metal keeps fast math off unless asked; so do we (no contraction into fma either).
  if (fast_math) f.push_back("-ffast-math");
  else f.push_back("-ffp-contract=off");
  // half arithmetic rounds after every operation, as on the GPU (clang keeps float otherwise).
  if (o.cxx.find("zig") != std::string::npos || o.cxx.find("clang") != std::string::npos) {
    f.push_back("-Xclang");
    f.push_back("-ffloat16-excess-precision=none");
  }
  return f;
}

}  // namespace

CompileResult compile_module(const Options& o, const std::string& header_hash, const std::string& cpp,
                             bool fast_math) {
  CompileResult r;
  std::vector<std::string> argv = split_words(o.cxx);
  if (argv.empty()) {
    r.error = "host backend: no C++ compiler configured (set SMELT_CXX or install Zig)";
    return r;
  }
  std::vector<std::string> f = flags(o, fast_math);
  std::string key_text = cpp + "\n--\n" + o.cxx + "\n" + header_hash;
  for (auto& x : f) key_text += " " + x;
  std::string key = hash_hex(key_text);
  if (!make_dirs(o.cache)) {
    r.error = "host backend: cannot create the kernel cache directory " + o.cache;
    return r;
  }
  clean_stale_tmp(o.cache);
  std::string final_path = o.cache + "/" + key + ".so", sum_path = o.cache + "/" + key + ".sum";
  if (verified(final_path, sum_path)) {
    r.cache_hit = true;
  } else {
    static std::atomic<unsigned> counter{0};
    std::string tmp = o.cache + "/tmp-" + key + "-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
    std::string src = tmp + ".cpp", out = tmp + ".so", log = tmp + ".log";
    if (!write_file(src, cpp)) {
      r.error = "host backend: cannot write " + src;
      return r;
    }
    argv.insert(argv.end(), f.begin(), f.end());
    argv.push_back("-o");
    argv.push_back(out);
    argv.push_back(src);
    int rc = run(argv, log);
    std::string messages = read_file(log);
    unlink(src.c_str());
    unlink(log.c_str());
    if (rc != 0) {
      unlink(out.c_str());
      r.error = rc < 0 ? "host backend: could not start the C++ compiler '" + argv[0] + "' (set SMELT_CXX or install Zig)"
                       : "MSL compilation failed:\n" + messages;
      return r;
    }
    std::string sum = module_checksum(read_file(out)), sum_tmp = tmp + ".sum";
    if (rename(out.c_str(), final_path.c_str()) != 0) {
      unlink(out.c_str());
      r.error = "host backend: cannot move the compiled kernel into " + final_path;
      return r;
    }
    // Without its checksum the module is compiled again next time, which is slower but safe.
    if (!write_file(sum_tmp, sum) || rename(sum_tmp.c_str(), sum_path.c_str()) != 0) unlink(sum_tmp.c_str());
  }
  void* h = dlopen(final_path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    r.error = std::string("host backend: cannot load compiled kernels: ") + dlerror();
    return r;
  }
  auto init = (__smelt_hk_init_fn)dlsym(h, "__smelt_module_init");
  if (!init) {
    dlclose(h);
    r.error = "host backend: compiled module has no __smelt_module_init";
    return r;
  }
  init(kernel_api());
  r.module = std::make_shared<Module>();
  r.module->handle = h;
  return r;
}

}  // namespace smelt_host

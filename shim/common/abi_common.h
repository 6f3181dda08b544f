// What the host and CUDA backends' smelt.h implementations share: the device and library options
// they both accept, the checks and messages of calls whose meaning does not depend on where
// memory lives, and the asynchronous compile job. Not part of the ABI.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "records.h"

namespace smelt_common {

void set_error(char* err, size_t errlen, const std::string& msg);

// Device options. Every backend accepts every key, so one option string serves whichever opens;
// a backend reads the keys that mean something to it.
struct DeviceOptions {
  unsigned threads = 0;  // host: worker threads (0: one per core)
  bool debug = false;
  std::string cache;  // kernel cache folder; set to ~/.cache/smelt by parse_device_options when empty
  std::string cxx = "c++";
  std::string include;
  bool host_visible = true;  // host: host_visible=0 hides contents, as a discrete GPU would
  // host: every pipeline's maxTotalThreadsPerThreadgroup. Metal lowers it below 1024 for kernels
  // that use many registers; max_threads=N lets tests make the host do the same.
  unsigned max_threads = SMELT_MAX_THREADS_PER_THREADGROUP;
};

bool parse_device_options(const char* text, DeviceOptions& o, std::string& why);

struct LibraryOptions {
  bool fast_math = false;
  int version;  // smelt_msl::kMslVersion30 or 31; the newest the Metal shim selects by default
  LibraryOptions();
};

bool parse_library_options(const char* options, LibraryOptions& lo, std::string& why);

// The message for a host copy of [offset, offset+length) of a buffer of buffer_length bytes that
// smelt.h refuses, or "" when the copy is fine.
std::string copy_error(const char* call, uint64_t buffer_length, uint64_t offset, const void* host, uint64_t length);

// The kernel of a library by name (kernels: a backend's KernelInfo with name and
// threadgroup_mask), or nullptr with the reason in why.
template <typename Info>
const Info* find_kernel(const std::vector<Info>& kernels, const std::string& name, std::string& why) {
  const Info* info = nullptr;
  std::string names;
  for (auto& k : kernels) {
    if (k.name == name) info = &k;
    names += (names.empty() ? "" : ", ") + k.name;
  }
  if (!info) {
    why = "the library has no kernel named '" + name + "' (it has: " + (names.empty() ? "none" : names) + ")";
    return nullptr;
  }
  if (info->threadgroup_mask >> SMELT_MAX_THREADGROUP_SLOTS) {
    why = "kernel " + name + ": a [[threadgroup(i)]] argument is past Metal's " + std::to_string(SMELT_MAX_THREADGROUP_SLOTS) +
          " threadgroup memory slots";
    return nullptr;
  }
  return info;
}

// What smelt_cmd_encode checks before a backend reads the records: the command buffer is still
// recording, every record passes the common checks and the backend's (env), and the command
// buffer may hold dispatches. Metal's queue would block the caller forever past
// SMELT_MAX_OPEN_COMMAND_BUFFERS uncommitted ones, so the backends refuse instead: open_count is
// the device's, under mutex, and open the command buffer's, set once records with a dispatch
// reach it. The reason, with smelt.h's "encode: " prefix, goes to why.
bool accept_records(bool recording, const void* records, size_t length, const smelt_record_env& env, std::mutex& mutex,
                    uint32_t& open_count, bool& open, std::string& why);
void release_open(std::mutex& mutex, uint32_t& open_count, bool& open);

}  // namespace smelt_common

// The job of smelt_library_new_async: make runs on a thread of its own.
struct smelt_compile {
  std::thread thread;
  std::atomic<bool> done{false};
  smelt_library* library = nullptr;
  std::string error;
};

namespace smelt_common {
smelt_compile* start_compile(std::function<smelt_library*(std::string& why)> make);
}  // namespace smelt_common

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

// smelt_cmd_new for a backend's device and command buffer types: refused without a device or on
// a lost one (lost(dev, err, errlen) reports it), counted in the device's command_buffers.
template <typename Cmd, typename Dev, typename Lost>
Cmd* new_command(Dev* dev, char* err, size_t errlen, Lost lost) {
  if (!dev) {
    set_error(err, errlen, "no device");
    return nullptr;
  }
  if (lost(dev, err, errlen)) return nullptr;
  auto* cmd = new Cmd();
  cmd->dev = dev;
  std::lock_guard<std::mutex> lock(dev->live_mutex);
  ++dev->command_buffers;
  return cmd;
}

// The start of smelt_cmd_encode: accept_records over the command buffer and its device, with the
// reason in err when refused.
template <typename Cmd>
bool accept_command_records(Cmd* cmd, const void* records, size_t length, const smelt_record_env& env, char* err, size_t errlen) {
  std::string why;
  if (accept_records(cmd->state == SMELT_CMD_RECORDING, records, length, env, cmd->dev->live_mutex, cmd->dev->open_command_buffers,
                     cmd->open, why))
    return true;
  set_error(err, errlen, why);
  return false;
}

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

// smelt_library_new and smelt_library_new_async over a backend's make(dev, source, options, why),
// which compiles (or finds in the cache) and returns the library or nullptr with the reason.
template <typename Dev, typename Lost, typename Make>
smelt_library* new_library(Dev* dev, const char* source, size_t source_len, const char* options, char* err, size_t errlen, Lost lost,
                           Make make) {
  if (!dev || !source || lost(dev, err, errlen)) return nullptr;
  LibraryOptions lo;
  std::string why;
  smelt_library* lib = nullptr;
  if (parse_library_options(options, lo, why)) lib = make(dev, std::string(source, source_len), lo, why);
  if (!lib) set_error(err, errlen, why);
  return lib;
}

template <typename Dev, typename Lost, typename Make>
smelt_compile* new_library_async(Dev* dev, const char* source, size_t source_len, const char* options, char* err, size_t errlen, Lost lost,
                                 Make make) {
  if (!dev || !source || lost(dev, err, errlen)) return nullptr;
  LibraryOptions lo;
  std::string why;
  if (!parse_library_options(options, lo, why)) {
    set_error(err, errlen, why);
    return nullptr;
  }
  std::string text(source, source_len);
  return start_compile([dev, text, lo, make](std::string& error) { return make(dev, text, lo, error); });
}
}  // namespace smelt_common

#include "abi_common.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "msl_front.h"
#include "records.h"

namespace smelt_common {

void set_error(char* err, size_t errlen, const std::string& msg) {
  if (!err || errlen == 0) return;
  size_t n = std::min(msg.size(), errlen - 1);
  std::memcpy(err, msg.data(), n);
  err[n] = 0;
}

namespace {

bool parse_count(const std::string& key, const std::string& value, long most, unsigned& out, std::string& why) {
  long n = std::strtol(value.c_str(), nullptr, 10);
  if (n < 1 || n > most) {
    why = "device option " + key + "=" + value + " must be a number from 1 to " + std::to_string(most);
    return false;
  }
  out = unsigned(n);
  return true;
}

}  // namespace

bool parse_device_options(const char* text, DeviceOptions& o, std::string& why) {
  std::stringstream in(text ? text : "");
  for (std::string item; std::getline(in, item, ';');) {
    if (item.find_first_not_of(" \t") == std::string::npos) continue;
    size_t eq = item.find('=');
    if (eq == std::string::npos) {
      why = "device option '" + item + "' is not key=value";
      return false;
    }
    std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    if (key == "threads") {
      if (!parse_count(key, value, 1024, o.threads, why)) return false;
    } else if (key == "max_threads") {
      if (!parse_count(key, value, long(SMELT_MAX_THREADS_PER_THREADGROUP), o.max_threads, why)) return false;
    } else if (key == "debug") {
      o.debug = value == "1" || value == "true";
    } else if (key == "cache") {
      o.cache = value;
    } else if (key == "cxx") {
      o.cxx = value;
    } else if (key == "include") {
      o.include = value;
    } else if (key == "host_visible") {
      o.host_visible = value != "0";
    } else if (key != "commit_every") {
      why = "unknown device option '" + key + "' (known: threads, max_threads, debug, cache, cxx, include, commit_every, host_visible)";
      return false;
    }
  }
  if (o.cache.empty()) {
    const char* home = std::getenv("HOME");
    o.cache = std::string(home ? home : "/tmp") + "/.cache/smelt";
  }
  return true;
}

LibraryOptions::LibraryOptions() : version(smelt_msl::kMslVersion31) {}

bool parse_library_options(const char* options, LibraryOptions& lo, std::string& why) {
  lo = LibraryOptions{};
  std::stringstream in(options ? options : "");
  for (std::string item; std::getline(in, item, ';');) {
    if (item.empty()) continue;
    if (item == "fast_math=1") lo.fast_math = true;
    else if (item == "fast_math=0") lo.fast_math = false;
    else if (item == "msl=3.0") lo.version = smelt_msl::kMslVersion30;
    else if (item == "msl=3.1") lo.version = smelt_msl::kMslVersion31;
    else {
      why = "library option '" + item + "' is unknown (known: fast_math=0|1, msl=3.0|3.1)";
      return false;
    }
  }
  return true;
}

std::string copy_error(const char* call, uint64_t buffer_length, uint64_t offset, const void* host, uint64_t length) {
  if (offset > buffer_length || length > buffer_length - offset)
    return std::string(call) + ": bytes " + std::to_string(offset) + ".." + std::to_string(offset + length) + " are outside the buffer's " +
           std::to_string(buffer_length) + " bytes";
  if (!host && length) return std::string(call) + ": the host pointer is NULL";
  return "";
}

bool accept_records(bool recording, const void* records, size_t length, const smelt_record_env& env, std::mutex& mutex,
                    uint32_t& open_count, bool& open, std::string& why) {
  if (!recording) {
    why = "encode: the command buffer was already committed";
    return false;
  }
  std::string text(512, '\0');
  if (smelt_records_check(records, length, &env, &text[0], text.size()) != 0) {
    why = "encode: " + std::string(text.c_str());
    return false;
  }
  if (open) return true;
  smelt_dispatch r;
  bool dispatches = false;
  for (size_t at = 0; !dispatches && smelt_records_next(records, length, &at, &r);) dispatches = r.kind != SMELT_REC_BARRIER;
  if (!dispatches) return true;
  std::lock_guard<std::mutex> lock(mutex);
  if (open_count >= SMELT_MAX_OPEN_COMMAND_BUFFERS) {
    why = "encode: " + std::to_string(SMELT_MAX_OPEN_COMMAND_BUFFERS) +
          " command buffers of this device hold uncommitted dispatches (the most Metal's queue allows without blocking); "
          "commit or free one first";
    return false;
  }
  ++open_count;
  open = true;
  return true;
}

void release_open(std::mutex& mutex, uint32_t& open_count, bool& open) {
  if (!open) return;
  std::lock_guard<std::mutex> lock(mutex);
  --open_count;
  open = false;
}

smelt_compile* start_compile(std::function<smelt_library*(std::string& why)> make) {
  auto* job = new smelt_compile();
  job->thread = std::thread([job, make] {
    job->library = make(job->error);
    job->done.store(true, std::memory_order_release);
  });
  return job;
}

}  // namespace smelt_common

extern "C" {

SMELT_API int smelt_compile_done(smelt_compile* job) { return job && job->done.load(std::memory_order_acquire) ? 1 : 0; }

SMELT_API smelt_library* smelt_compile_finish(smelt_compile* job, char* err, size_t errlen) {
  if (!job) return nullptr;
  job->thread.join();
  smelt_library* lib = job->library;
  if (!lib) smelt_common::set_error(err, errlen, job->error);
  delete job;
  return lib;
}

}  // extern "C"

// The edits every MSL back end makes to a parsed source (msl_front.h), kept in one place: the
// source is edited in place, every line kept where it was so that compiler messages point at MSL
// lines; address spaces go, unsuffixed floating literals get `f`, <metal_*> includes become
// <metal_stdlib>, and a launcher per kernel and template instance is appended. A back end says
// how kernels are declared, how a kernel parameter and threadgroup storage are spelled, and what
// each launcher is.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "msl_front.h"

namespace smelt_msl {

// What a launcher binds, for the backend's kernel table.
struct LauncherInfo {
  std::string host_name;  // the name pipelines ask for ([[host_name]] or the function's)
  std::string call;       // the function to call: its name, or name<template args>
  const Function* function = nullptr;
  uint32_t buffer_mask = 0, threadgroup_mask = 0;
};

class Rewriter {
 public:
  Rewriter(const Source& s, int version) : s_(s), version_(version) {}
  virtual ~Rewriter() = default;

 protected:
  const Source& s_;
  int version_;

  // Edits the source; then body() is the edited text.
  void rewrite();
  std::string body() const;
  // "#include <metal_stdlib>" and what Apple's compiler predefines at the version.
  std::string prologue() const;
  // Every kernel that gets a launcher: plain kernels, then the explicit instantiations.
  std::vector<LauncherInfo> launchers() const;
  // Where a launcher finds a thread attribute, by the fields both backends' thread structs name;
  // empty for the SIMD width, "grid" for dispatch_threads_per_threadgroup.
  static const std::string& attribute_field(const std::string& attr);

  // What replaces a [[kernel]] marker.
  virtual std::string kernel_specifiers() const = 0;
  // A kernel parameter in the rewritten signature.
  virtual std::string parameter(const Param& p) const { return p.type + " " + p.name; }
  // A threadgroup declaration's replacement: storage is its variable's name, bytes the C++ sum of
  // the sizes of the function's threadgroup storage in scope.
  virtual std::string threadgroup_storage(const ThreadgroupDecl& d, const std::string& storage, const std::string& bytes) const = 0;

 private:
  struct Edit {
    size_t begin, end;
    std::string text;
  };
  std::vector<Edit> edits_;

  void replace(size_t first, size_t last, const std::string& with);
  bool includes_metal_header(size_t i) const;
  void rewrite_number(size_t i);
};

}  // namespace smelt_msl

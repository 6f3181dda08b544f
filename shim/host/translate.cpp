// The host back end of the MSL translator: C++ from the front end's description of the source
// (shim/translate/msl_front.h), through the edits every back end shares (msl_rewrite.h), with a
// launcher per kernel that turns the dispatch's bindings and thread positions into the kernel's
// arguments.
#include "translate.h"

#include "msl_rewrite.h"

namespace smelt_host {
namespace {

using smelt_msl::Param;
using smelt_msl::ParamKind;

class CppBackEnd : public smelt_msl::Rewriter {
 public:
  CppBackEnd(const smelt_msl::Source& s, bool checks, int version) : Rewriter(s, version), checks_(checks) {}

  std::string run(std::vector<KernelInfo>& kernels) {
    rewrite();
    std::string out = prologue() + "#line 1 \"" + std::string(smelt_msl::kSourceName) + "\"\n" + body() +
                      "\n#line 1 \"smelt-launchers\"\n"
                      "extern \"C\" {\n"
                      "const __smelt_hk_api* __smelt_api = 0;\n"
                      "__attribute__((visibility(\"default\"))) void __smelt_module_init(const __smelt_hk_api* a) { __smelt_api = a; }\n";
    // Kernels that synchronize run their threads as fibers (fiber.cpp); the others also get a
    // plain loop over whole threadgroups.
    for (auto& l : launchers()) {
      KernelInfo k;
      k.name = l.host_name;
      k.needs_fibers = l.function->synchronizes;
      k.buffer_mask = l.buffer_mask;
      k.threadgroup_mask = l.threadgroup_mask;
      std::string args;
      for (auto& p : l.function->params) args += (args.empty() ? "" : ", ") + argument(p);
      out += "__attribute__((visibility(\"default\"))) void __smelt_kthread_" + l.host_name +
             "(const __smelt_hk_launch* L, const __smelt_hk_thread* T) { (void)L; (void)T; " + l.call + "(" + args + "); }\n";
      if (!k.needs_fibers)
        out += "__attribute__((visibility(\"default\"))) void __smelt_kloop_" + l.host_name +
               "(const __smelt_hk_launch* L, unsigned first, unsigned end) { __smelt_detail::run_groups(L, first, end, "
               "[L](const __smelt_hk_thread* T) { (void)T; " + l.call + "(" + args + "); }); }\n";
      kernels.push_back(k);
    }
    return out + "}\n";
  }

 private:
  bool checks_;

  // A kernel becomes an ordinary function that its launchers inline.
  std::string kernel_specifiers() const override { return "static inline __attribute__((always_inline))"; }

  std::string parameter(const Param& p) const override {
    if (p.kind == ParamKind::Buffer && p.pointer && checks_)
      return "__smelt_detail::checked<" + p.type.substr(0, p.type.size() - 1) + "> " + p.name;
    return p.type + " " + p.name;
  }

  // One instance of a threadgroup variable per threadgroup. Every GPU thread of a threadgroup runs
  // on the same worker thread, so thread_local storage is exactly that. The size is checked here at
  // compile time, and reported at run time so that the runtime can check it together with the
  // dispatch's [[threadgroup(i)]] memory.
  std::string threadgroup_storage(const smelt_msl::ThreadgroupDecl& d, const std::string& storage,
                                  const std::string& bytes) const override {
    return "static thread_local " + d.type + " " + storage + d.dims + "; auto& " + d.name + " = " + storage + "; static_assert(" + bytes +
           " <= 32768, \"threadgroup memory declared in this function exceeds Metal's 32 KiB\"); "
           "__smelt_api->threadgroup_static_bytes(" + bytes + ");";
  }

  // Each argument is a proxy that converts to whatever type the parameter has, so launchers of
  // template instances never spell a type that depends on the template's parameters.
  std::string argument(const Param& p) const {
    std::string slot = std::to_string(p.index);
    if (p.kind == ParamKind::Buffer)
      return std::string(p.pointer ? "__smelt_detail::buffer_ptr" : "__smelt_detail::buffer_ref") + "{L, " + slot + "u, " +
             (checks_ ? "true" : "false") + "}";
    if (p.kind == ParamKind::Threadgroup)
      return std::string(p.pointer ? "__smelt_detail::raw_ptr" : "__smelt_detail::raw_ref") + "{L->threadgroup[" + slot + "]}";
    const std::string& field = attribute_field(p.attr);
    if (p.kind == ParamKind::Position)
      return "__smelt_detail::position_arg{" + (field == "grid" ? std::string("L->grid->group") : "T->" + field) + "}";
    return "__smelt_detail::index_arg{" + (field.empty() ? std::string("__SMELT_SIMD_WIDTH") : "T->" + field) + "}";
  }
};

}  // namespace

Translation translate_msl(const std::string& msl, bool bounds_checks, int version) {
  Translation out;
  std::string selected = smelt_msl::select_version(msl, version, out.error);
  if (!out.error.empty()) return out;
  smelt_msl::Source source = smelt_msl::parse(selected, "the host backend");
  if (!source.errors.empty()) {
    out.error = source.errors;
    return out;
  }
  out.cpp = CppBackEnd(source, bounds_checks, version).run(out.kernels);
  out.ok = true;
  return out;
}

}  // namespace smelt_host

// The CUDA back end of the MSL translator, through the edits every back end shares
// (shim/translate/msl_rewrite.h): `threadgroup` storage becomes __shared__, kernels become device
// functions, and a __global__ launcher per kernel is appended.
#include "translate_cuda.h"

#include "msl_rewrite.h"

namespace smelt_cuda {
namespace {

using smelt_msl::Param;
using smelt_msl::ParamKind;

class CudaBackEnd : public smelt_msl::Rewriter {
 public:
  using Rewriter::Rewriter;

  std::string run(std::vector<KernelInfo>& kernels) {
    rewrite();
    // The source and its launchers go in the namespace the header prepares (see metal_stdlib).
    std::string out = prologue() + "namespace __smelt_user {\n#line 1 \"" + std::string(smelt_msl::kSourceName) + "\"\n" + body() +
                      "\n#line 1 \"smelt-launchers\"\n";
    // Threads past a non-uniform grid's edge, which Metal never starts, return before the kernel;
    // barriers then wait only for the threads that remain.
    for (auto& l : launchers()) {
      KernelInfo k;
      k.name = l.host_name;
      k.buffer_mask = l.buffer_mask;
      k.threadgroup_mask = l.threadgroup_mask;
      std::string args;
      for (auto& p : l.function->params) args += (args.empty() ? "" : ", ") + argument(p);
      out += "extern \"C\" __global__ void " + std::string(kLauncherPrefix) + l.host_name +
             "(const __smelt_cuda_launch L) { const __smelt_detail::cuda_thread T = __smelt_detail::cuda_thread_of(L); "
             "if (!T.inside) return; (void)T; " + l.call + "(" + args + "); }\n";
      kernels.push_back(k);
    }
    return out + "}  // namespace __smelt_user\n";
  }

 private:
  std::string kernel_specifiers() const override { return "inline"; }

  // Static __shared__ storage, one instance per block. Metal's 32 KiB bound on a function's
  // threadgroup memory is checked at compile time, as Apple's compiler does.
  std::string threadgroup_storage(const smelt_msl::ThreadgroupDecl& d, const std::string& storage,
                                  const std::string& bytes) const override {
    return "__shared__ " + d.type + " " + storage + d.dims + "; auto& " + d.name + " = " + storage + "; static_assert(" + bytes +
           " <= 32768, \"threadgroup memory declared in this function exceeds Metal's 32 KiB\");";
  }

  std::string argument(const Param& p) const {
    std::string slot = std::to_string(p.index);
    if (p.kind == ParamKind::Buffer)
      return std::string(p.pointer ? "__smelt_detail::raw_ptr" : "__smelt_detail::raw_ref") + "{L.buffers[" + slot + "]}";
    if (p.kind == ParamKind::Threadgroup)
      return std::string(p.pointer ? "__smelt_detail::raw_ptr" : "__smelt_detail::raw_ref") +
             "{__smelt_dynamic_shared + L.tgmem[" + slot + "]}";
    const std::string& field = attribute_field(p.attr);
    if (p.kind == ParamKind::Position) return "__smelt_detail::position_arg{T." + field + "}";
    return "__smelt_detail::index_arg{" + (field.empty() ? std::string("32u") : "T." + field) + "}";
  }
};

}  // namespace

Translation translate_msl(const std::string& msl, int version) {
  Translation out;
  std::string selected = smelt_msl::select_version(msl, version, out.error);
  if (!out.error.empty()) return out;
  smelt_msl::Source source = smelt_msl::parse(selected, "the CUDA backend");
  if (!source.errors.empty()) {
    out.error = source.errors;
    return out;
  }
  out.cuda = CudaBackEnd(source, version).run(out.kernels);
  out.ok = true;
  return out;
}

}  // namespace smelt_cuda

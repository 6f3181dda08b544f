// The CUDA back end of the MSL translator. MSL is C++ with address spaces and attributes, so the
// source is edited in place, every line kept where it was (NVRTC's messages then point at MSL
// lines): address spaces go, `threadgroup` storage becomes __shared__, kernels become device
// functions, and a __global__ launcher per kernel is appended.
#include "translate_cuda.h"

#include <algorithm>
#include <cstring>
#include <map>

#include "msl_front.h"

namespace smelt_cuda {
namespace {

using smelt_msl::Function;
using smelt_msl::Param;
using smelt_msl::ParamKind;
using smelt_msl::TokenKind;

struct Edit {
  size_t begin, end;
  std::string text;
};

// Where the launcher finds each thread attribute: a field of __smelt_detail::cuda_thread, or the
// SIMD width (empty).
const std::map<std::string, std::string>& attribute_fields() {
  static const std::map<std::string, std::string> m = {
      {"thread_position_in_grid", "tpig"},
      {"thread_position_in_threadgroup", "tpitg"},
      {"threadgroup_position_in_grid", "tgpig"},
      {"threads_per_threadgroup", "tptg"},
      {"threads_per_grid", "tpg"},
      {"threadgroups_per_grid", "tgpg"},
      {"dispatch_threads_per_threadgroup", "grid"},
      {"thread_index_in_threadgroup", "tiitg"},
      {"thread_index_in_simdgroup", "lane"},
      {"simdgroup_index_in_threadgroup", "sgitg"},
      {"simdgroups_per_threadgroup", "sgptg"},
      {"threads_per_simdgroup", ""},
      {"thread_execution_width", ""},
  };
  return m;
}

class CudaBackEnd {
 public:
  CudaBackEnd(const smelt_msl::Source& s, int version) : s_(s), version_(version) {}

  std::string run(std::vector<KernelInfo>& kernels) {
    for (auto& m : s_.markers) replace(m.first, m.last, m.kernel ? "inline" : "");
    for (auto& in : s_.instantiations)
      if (in.last < s_.tokens.size()) replace(in.first, in.last, "");
    for (auto& f : s_.functions) {
      if (f.is_kernel) rewrite_signature(f);
      rewrite_threadgroup_storage(f);
    }
    for (size_t i = 0; i < s_.tokens.size(); ++i) {
      if (s_.structural[i]) continue;
      TokenKind kind = s_.tokens[i].kind;
      if (kind == TokenKind::Directive) {
        if (includes_metal_header(i)) replace(i, i, "#include <metal_stdlib>");
      } else if (kind == TokenKind::Number) {
        rewrite_number(i);
      } else if (kind == TokenKind::Ident) {
        if (s_.is(i, "device") || s_.is(i, "thread") || s_.is(i, "threadgroup")) replace(i, i, "");
        else if (s_.is(i, "constant")) replace(i, i, s_.is(i + 1, "const") || (i > 0 && s_.is(i - 1, "const")) ? "" : "const");
      }
    }
    return assemble(kernels);
  }

 private:
  const smelt_msl::Source& s_;
  int version_;
  std::vector<Edit> edits_;

  // Replaces tokens [first, last] by text, keeping the lines they spanned.
  void replace(size_t first, size_t last, const std::string& with) {
    size_t b = s_.tokens[first].begin, e = s_.tokens[last].end;
    std::string t = with;
    t.append(size_t(std::count(s_.text.begin() + long(b), s_.text.begin() + long(e), '\n')), '\n');
    edits_.push_back(Edit{b, e, t});
  }

  // The front end accepted only #include directives of the <metal_*> headers.
  bool includes_metal_header(size_t i) const {
    std::string d = s_.spelling(i);
    size_t p = d.find_first_not_of(" \t", 1);
    return p != std::string::npos && d.compare(p, 7, "include") == 0;
  }

  void rewrite_signature(const Function& f) {
    std::string sig;
    for (auto& p : f.params) sig += (sig.empty() ? "" : ", ") + p.type + " " + p.name;
    replace(f.params_open, f.params_close, "(" + sig + ")");
  }

  // Floating literals without a suffix are float in MSL (no double); 1.0h is half.
  void rewrite_number(size_t i) {
    std::string s = s_.spelling(i);
    bool hex = s.size() > 1 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
    bool is_float = hex ? s.find_first_of("pP") != std::string::npos : s.find_first_of(".eE") != std::string::npos;
    if (!is_float) return;
    size_t core = s.size();
    while (core > 0 && std::strchr("fFhHlL", s[core - 1])) --core;
    std::string suffix = s.substr(core);
    if (suffix.empty()) replace(i, i, s + "f");
    else if (suffix == "h" || suffix == "H") replace(i, i, "((half)" + s.substr(0, core) + "f)");
  }

  // Static __shared__ storage, one instance per block. Metal's 32 KiB bound on a function's
  // threadgroup memory is checked at compile time, as Apple's compiler does.
  void rewrite_threadgroup_storage(const Function& f) {
    for (auto& d : f.threadgroup) {
      std::string storage = "__smelt_tg_" + d.name;
      std::string sum;
      for (auto& n : d.in_scope) sum += (sum.empty() ? "" : " + ") + std::string("sizeof(__smelt_tg_") + n + ")";
      std::string out = "__shared__ " + d.type + " " + storage + d.dims + "; auto& " + d.name + " = " + storage +
                        "; static_assert(" + sum + " <= 32768, \"threadgroup memory declared in this function exceeds Metal's 32 KiB\");";
      replace(d.first, d.last, out);
    }
  }

  std::string argument(const Param& p) const {
    std::string slot = std::to_string(p.index);
    if (p.kind == ParamKind::Buffer)
      return std::string(p.pointer ? "__smelt_detail::raw_ptr" : "__smelt_detail::raw_ref") + "{L.buffers[" + slot + "]}";
    if (p.kind == ParamKind::Threadgroup)
      return std::string(p.pointer ? "__smelt_detail::raw_ptr" : "__smelt_detail::raw_ref") +
             "{__smelt_dynamic_shared + L.tgmem[" + slot + "]}";
    const std::string& field = attribute_fields().at(p.attr);
    if (p.kind == ParamKind::Position) return "__smelt_detail::position_arg{T." + field + "}";
    return "__smelt_detail::index_arg{" + (field.empty() ? std::string("32u") : "T." + field) + "}";
  }

  // What Apple's compiler predefines at the version. Before 3.1 bfloat does not exist: its names
  // become ones no declaration has, so a kernel using them fails at its own line, naming why.
  std::string version_macros() const {
    std::string m = "#define __METAL_VERSION__ " + std::to_string(version_) + "\n";
    if (version_ >= smelt_msl::kMslVersion31) return m + "#define __HAVE_BFLOAT__ 1\n";
    for (const char* n : {"bfloat", "bfloat2", "bfloat3", "bfloat4"})
      m += "#define " + std::string(n) + " " + n + "_needs_MSL_3_1\n";
    return m;
  }

  std::string assemble(std::vector<KernelInfo>& kernels) {
    std::sort(edits_.begin(), edits_.end(), [](const Edit& a, const Edit& b) { return a.begin < b.begin; });
    std::string body;
    size_t at = 0;
    for (auto& e : edits_) {
      body.append(s_.text, at, e.begin - at);
      body += e.text;
      at = e.end;
    }
    body.append(s_.text, at, std::string::npos);

    // The source and its launchers go in the namespace the header prepares (see metal_stdlib).
    std::string out = "#include <metal_stdlib>\n" + version_macros() + "namespace __smelt_user {\n#line 1 \"" +
                      std::string(smelt_msl::kSourceName) + "\"\n" + body + "\n#line 1 \"smelt-launchers\"\n";
    // Threads past a non-uniform grid's edge, which Metal never starts, return before the kernel;
    // barriers then wait only for the threads that remain.
    auto launcher = [&](const Function& f, const std::string& host, const std::string& call) {
      KernelInfo k;
      k.name = host;
      std::string args;
      for (auto& p : f.params) {
        args += (args.empty() ? "" : ", ") + argument(p);
        if (p.kind == ParamKind::Buffer) k.buffer_mask |= 1u << p.index;
        if (p.kind == ParamKind::Threadgroup) k.threadgroup_mask |= 1u << p.index;
      }
      out += "extern \"C\" __global__ void " + std::string(kLauncherPrefix) + host +
             "(const __smelt_cuda_launch L) { const __smelt_detail::cuda_thread T = __smelt_detail::cuda_thread_of(L); "
             "if (!T.inside) return; (void)T; " + call + "(" + args + "); }\n";
      kernels.push_back(k);
    };
    for (auto& f : s_.functions)
      if (f.is_kernel && !f.is_template) launcher(f, f.name, f.name);
    for (auto& in : s_.instantiations) launcher(*s_.kernel(in.function), in.host_name, in.function + "<" + in.template_args + ">");
    return out + "}  // namespace __smelt_user\n";
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

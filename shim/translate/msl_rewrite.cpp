#include "msl_rewrite.h"

#include <algorithm>
#include <cstring>
#include <map>

namespace smelt_msl {

const std::string& Rewriter::attribute_field(const std::string& attr) {
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
  return m.at(attr);
}

void Rewriter::rewrite() {
  for (auto& m : s_.markers) replace(m.first, m.last, m.kernel ? kernel_specifiers() : "");
  for (auto& in : s_.instantiations)
    if (in.last < s_.tokens.size()) replace(in.first, in.last, "");
  for (auto& f : s_.functions) {
    if (f.is_kernel) {
      std::string sig;
      for (auto& p : f.params) sig += (sig.empty() ? "" : ", ") + parameter(p);
      replace(f.params_open, f.params_close, "(" + sig + ")");
    }
    for (auto& d : f.threadgroup) {
      std::string storage = "__smelt_tg_" + d.name, sum;
      for (auto& n : d.in_scope) sum += (sum.empty() ? "" : " + ") + std::string("sizeof(__smelt_tg_") + n + ")";
      replace(d.first, d.last, threadgroup_storage(d, storage, sum));
    }
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
  std::sort(edits_.begin(), edits_.end(), [](const Edit& a, const Edit& b) { return a.begin < b.begin; });
}

std::string Rewriter::body() const {
  std::string out;
  size_t at = 0;
  for (auto& e : edits_) {
    out.append(s_.text, at, e.begin - at);
    out += e.text;
    at = e.end;
  }
  out.append(s_.text, at, std::string::npos);
  return out;
}

// Before 3.1 bfloat does not exist: its names become ones no declaration has, so a kernel using
// them fails at its own line, naming why.
std::string Rewriter::prologue() const {
  std::string m = "#include <metal_stdlib>\n#define __METAL_VERSION__ " + std::to_string(version_) + "\n";
  if (version_ >= kMslVersion31) return m + "#define __HAVE_BFLOAT__ 1\n";
  for (const char* n : {"bfloat", "bfloat2", "bfloat3", "bfloat4"}) m += "#define " + std::string(n) + " " + n + "_needs_MSL_3_1\n";
  return m;
}

std::vector<LauncherInfo> Rewriter::launchers() const {
  std::vector<LauncherInfo> out;
  auto add = [&](const Function& f, const std::string& host, const std::string& call) {
    LauncherInfo k;
    k.host_name = host;
    k.call = call;
    k.function = &f;
    for (auto& p : f.params) {
      if (p.kind == ParamKind::Buffer) k.buffer_mask |= 1u << p.index;
      if (p.kind == ParamKind::Threadgroup) k.threadgroup_mask |= 1u << p.index;
    }
    out.push_back(k);
  };
  for (auto& f : s_.functions)
    if (f.is_kernel && !f.is_template) add(f, f.name, f.name);
  for (auto& in : s_.instantiations) add(*s_.kernel(in.function), in.host_name, in.function + "<" + in.template_args + ">");
  return out;
}

void Rewriter::replace(size_t first, size_t last, const std::string& with) {
  size_t b = s_.tokens[first].begin, e = s_.tokens[last].end;
  std::string t = with;
  t.append(size_t(std::count(s_.text.begin() + long(b), s_.text.begin() + long(e), '\n')), '\n');
  edits_.push_back(Edit{b, e, t});
}

// The front end accepted only #include directives of the <metal_*> headers.
bool Rewriter::includes_metal_header(size_t i) const {
  std::string d = s_.spelling(i);
  size_t p = d.find_first_not_of(" \t", 1);
  return p != std::string::npos && d.compare(p, 7, "include") == 0;
}

// Floating literals without a suffix are float in MSL (no double); 1.0h is half.
void Rewriter::rewrite_number(size_t i) {
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

}  // namespace smelt_msl

// MSL to C++ for the host backend. The source is tokenized, the few places that differ from C++
// are edited in place (keeping every line where it was, so compiler messages point at MSL lines),
// and a launcher per kernel is appended that turns the dispatch's bindings and thread positions
// into the kernel's arguments.
#include "translate.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

namespace smelt_host {
namespace {

enum class Kind { Ident, Number, Punct, String, Char, Directive };

struct Token {
  Kind kind;
  size_t begin, end;
  int line;
};

struct Edit {
  size_t begin, end;
  std::string text;
};

struct Param {
  std::string type;  // C++ type, address spaces removed
  std::string name;
  std::string attr;  // attribute name, e.g. "buffer" or "thread_position_in_grid"
  int index = -1;    // the attribute's argument, for buffer(i) and threadgroup(i)
  int line = 0;
};

struct Function {
  std::string name;
  size_t body_open = 0, body_close = 0;  // token indices of { and }
  bool is_kernel = false;
  bool is_template = false;
  std::vector<Param> params;
  int line = 0;
};

struct Instantiation {
  std::string host_name, function, template_args;
  int line = 0;
};

// A kernel becomes an ordinary function that its launchers inline.
const char* const kKernelSpecifiers = "static inline __attribute__((always_inline))";

bool is_ident_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_ident_char(char c) { return is_ident_start(c) || (c >= '0' && c <= '9'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

class Translator {
 public:
  Translator(const std::string& src, bool checks) : src_(src), checks_(checks) {}

  Translation run() {
    Translation out;
    tokenize();
    if (errors_.empty()) scan_top_level();
    if (errors_.empty()) rewrite_tokens();
    if (errors_.empty()) check_instances();
    if (!errors_.empty()) {
      out.error = errors_;
      return out;
    }
    out.ok = true;
    out.cpp = assemble(out.kernels);
    return out;
  }

 private:
  const std::string& src_;
  bool checks_;
  std::vector<Token> toks_;
  std::vector<Edit> edits_;
  std::vector<bool> covered_;  // tokens whose text an edit already replaced
  std::vector<Function> funcs_;
  std::vector<Instantiation> insts_;
  std::string errors_;

  std::string text(size_t i) const { return src_.substr(toks_[i].begin, toks_[i].end - toks_[i].begin); }
  bool is(size_t i, const char* s) const {
    if (i >= toks_.size()) return false;
    size_t n = std::strlen(s);
    return toks_[i].end - toks_[i].begin == n && src_.compare(toks_[i].begin, n, s) == 0;
  }
  bool ident(size_t i) const { return i < toks_.size() && toks_[i].kind == Kind::Ident; }

  void error(int line, const std::string& msg) {
    errors_ += std::string(kSourceName) + ":" + std::to_string(line) + ": error: " + msg + "\n";
  }

  // ---- tokens -------------------------------------------------------------------------------
  void tokenize() {
    const std::string& s = src_;
    size_t i = 0, n = s.size();
    int line = 1;
    bool line_start = true;
    while (i < n) {
      char c = s[i];
      if (c == '\n') {
        ++line;
        ++i;
        line_start = true;
        continue;
      }
      if (c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v') {
        ++i;
        continue;
      }
      if (c == '/' && i + 1 < n && s[i + 1] == '/') {
        while (i < n && s[i] != '\n') ++i;
        continue;
      }
      if (c == '/' && i + 1 < n && s[i + 1] == '*') {
        size_t e = s.find("*/", i + 2);
        if (e == std::string::npos) {
          error(line, "unterminated comment");
          return;
        }
        line += int(std::count(s.begin() + long(i), s.begin() + long(e), '\n'));
        i = e + 2;
        continue;
      }
      size_t b = i;
      int start_line = line;
      Kind k;
      if (c == '#' && line_start) {
        while (i < n && s[i] != '\n') {
          if (s[i] == '\\' && i + 1 < n && s[i + 1] == '\n') {
            ++line;
            i += 2;
            continue;
          }
          ++i;
        }
        k = Kind::Directive;
      } else if (is_ident_start(c)) {
        while (i < n && is_ident_char(s[i])) ++i;
        k = Kind::Ident;
      } else if (is_digit(c) || (c == '.' && i + 1 < n && is_digit(s[i + 1]))) {
        bool hex = c == '0' && i + 1 < n && (s[i + 1] == 'x' || s[i + 1] == 'X');
        while (i < n) {
          char d = s[i];
          bool exp = hex ? (d == 'p' || d == 'P') : (d == 'e' || d == 'E');
          if (exp && i + 1 < n && (s[i + 1] == '+' || s[i + 1] == '-')) {
            i += 2;
            continue;
          }
          if (is_ident_char(d) || d == '.') {
            ++i;
            continue;
          }
          break;
        }
        k = Kind::Number;
      } else if (c == '"' || c == '\'') {
        ++i;
        while (i < n && s[i] != c) {
          if (s[i] == '\\') ++i;
          if (i < n && s[i] == '\n') ++line;
          ++i;
        }
        if (i >= n) {
          error(start_line, "unterminated literal");
          return;
        }
        ++i;
        k = c == '"' ? Kind::String : Kind::Char;
      } else {
        if ((c == ':' && i + 1 < n && s[i + 1] == ':') || (c == '-' && i + 1 < n && s[i + 1] == '>')) i += 2;
        else ++i;
        k = Kind::Punct;
      }
      line_start = false;
      toks_.push_back(Token{k, b, i, start_line});
    }
    covered_.assign(toks_.size(), false);
  }

  // Index of the token closing the bracket opened at i ((, [, { or <), or toks_.size().
  size_t match(size_t i) const {
    std::string open = text(i);
    std::string close = open == "(" ? ")" : open == "[" ? "]" : open == "{" ? "}" : ">";
    int depth = 0;
    for (size_t j = i; j < toks_.size(); ++j) {
      if (toks_[j].kind != Kind::Punct) continue;
      if (is(j, open.c_str())) ++depth;
      else if (is(j, close.c_str()) && --depth == 0) return j;
    }
    return toks_.size();
  }

  // Replaces tokens [first, last] by text, keeping the lines they spanned.
  void replace(size_t first, size_t last, const std::string& with) {
    size_t b = toks_[first].begin, e = toks_[last].end;
    std::string t = with;
    t.append(size_t(std::count(src_.begin() + long(b), src_.begin() + long(e), '\n')), '\n');
    edits_.push_back(Edit{b, e, t});
    for (size_t j = first; j <= last; ++j) covered_[j] = true;
  }

  // ---- structure ----------------------------------------------------------------------------
  void scan_top_level() {
    bool pending_kernel = false;
    size_t n = toks_.size();
    for (size_t i = 0; i < n && errors_.empty();) {
      if (is(i, "template") && is(i + 1, "[")) {
        i = parse_instantiation(i);
        continue;
      }
      if (is(i, "[") && is(i + 1, "[")) {
        size_t close = match(i);
        if (close >= n) {
          error(toks_[i].line, "unterminated attribute");
          return;
        }
        bool kernel_attr = false;
        for (size_t j = i + 2; j < close; ++j)
          if (is(j, "kernel")) kernel_attr = true;
        pending_kernel = pending_kernel || kernel_attr;
        replace(i, close, kernel_attr ? kKernelSpecifiers : "");
        i = close + 1;
        continue;
      }
      if (is(i, "kernel")) {
        pending_kernel = true;
        replace(i, i, kKernelSpecifiers);
        ++i;
        continue;
      }
      if (is(i, "threadgroup")) {
        error(toks_[i].line, "threadgroup variables must be declared inside a kernel function");
        return;
      }
      if (is(i, "template") && is(i + 1, "<")) {
        size_t close = match(i + 1);
        template_pending_ = true;
        i = close + 1;
        continue;
      }
      if (ident(i) && is(i + 1, "(")) {
        size_t close = match(i + 1);
        if (close >= n) {
          error(toks_[i].line, "unbalanced parentheses");
          return;
        }
        size_t after = close + 1;
        while (is(after, "const")) ++after;
        if (is(after, "{")) {
          Function f;
          f.name = text(i);
          f.line = toks_[i].line;
          f.body_open = after;
          f.body_close = match(after);
          f.is_kernel = pending_kernel;
          f.is_template = template_pending_;
          if (f.body_close >= n) {
            error(f.line, "unbalanced braces in function '" + f.name + "'");
            return;
          }
          if (f.is_kernel) parse_kernel_signature(f, i, close);
          funcs_.push_back(f);
          pending_kernel = false;
          template_pending_ = false;
          i = f.body_close + 1;
          continue;
        }
        if (pending_kernel && is(after, ";")) pending_kernel = false;  // a declaration only
        i = after;
        continue;
      }
      if (is(i, ";")) template_pending_ = false;
      if (is(i, "{")) {
        size_t close = match(i);
        i = close >= n ? n : close + 1;
        if (is(i, ";")) template_pending_ = false;
        continue;
      }
      ++i;
    }
  }
  bool template_pending_ = false;

  // template [[host_name("name")]] [[kernel]] void function<args>(params);
  size_t parse_instantiation(size_t i) {
    int line = toks_[i].line;
    size_t j = i + 1;
    Instantiation inst;
    inst.line = line;
    while (is(j, "[") && is(j + 1, "[")) {
      size_t close = match(j);
      for (size_t k = j + 2; k < close; ++k)
        if (is(k, "host_name") && is(k + 1, "(") && k + 2 < toks_.size() && toks_[k + 2].kind == Kind::String) {
          std::string s = text(k + 2);
          inst.host_name = s.substr(1, s.size() - 2);
        }
      j = close + 1;
    }
    if (is(j, "kernel")) ++j;
    if (is(j, "void")) ++j;
    if (!ident(j) || !is(j + 1, "<")) {
      error(line, "expected 'template [[host_name(\"name\")]] kernel void function<types>(parameters);'");
      return toks_.size();
    }
    inst.function = text(j);
    size_t close = match(j + 1);
    for (size_t k = j + 2; k < close; ++k) inst.template_args += text(k) + " ";
    size_t end = close + 1;
    while (end < toks_.size() && !is(end, ";")) ++end;
    if (inst.host_name.empty()) {
      error(line, "explicit instantiation of '" + inst.function + "' needs [[host_name(\"...\")]]");
      return toks_.size();
    }
    insts_.push_back(inst);
    if (end < toks_.size()) replace(i, end, "");
    return end + 1;
  }

  static const std::map<std::string, std::string>& position_fields() {
    static const std::map<std::string, std::string> m = {
        {"thread_position_in_grid", "tpig"},
        {"thread_position_in_threadgroup", "tpitg"},
        {"threadgroup_position_in_grid", "tgpig"},
        {"threads_per_threadgroup", "tptg"},
        {"threads_per_grid", "tpg"},
        {"threadgroups_per_grid", "tgpg"},
        {"dispatch_threads_per_threadgroup", "grid"},
    };
    return m;
  }
  static const std::map<std::string, std::string>& index_fields() {
    static const std::map<std::string, std::string> m = {
        {"thread_index_in_threadgroup", "tiitg"},
        {"thread_index_in_simdgroup", "lane"},
        {"simdgroup_index_in_threadgroup", "sgitg"},
        {"simdgroups_per_threadgroup", "sgptg"},
        {"threads_per_simdgroup", ""},
        {"thread_execution_width", ""},
    };
    return m;
  }

  // The C++ spelling of a type: Metal address spaces dropped (constant becomes const).
  std::string type_text(size_t first, size_t end) {
    std::string t;
    bool has_const = false;
    for (size_t k = first; k < end; ++k)
      if (is(k, "const")) has_const = true;
    for (size_t k = first; k < end; ++k) {
      if (is(k, "device") || is(k, "thread") || is(k, "threadgroup")) continue;
      if (is(k, "constant")) {
        if (!has_const) t += "const ";
        continue;
      }
      t += text(k) + " ";
    }
    while (!t.empty() && t.back() == ' ') t.pop_back();
    return t;
  }

  void parse_kernel_signature(Function& f, size_t name_tok, size_t close) {
    size_t open = name_tok + 1;
    std::vector<std::pair<size_t, size_t>> ranges;
    int depth = 0;
    size_t start = open + 1;
    for (size_t k = open + 1; k < close; ++k) {
      if (is(k, "(") || is(k, "[") || is(k, "<") || is(k, "{")) ++depth;
      else if (is(k, ")") || is(k, "]") || is(k, ">") || is(k, "}")) --depth;
      else if (depth == 0 && is(k, ",")) {
        ranges.push_back({start, k});
        start = k + 1;
      }
    }
    if (start < close) ranges.push_back({start, close});
    std::string sig;
    for (auto& r : ranges) {
      Param p;
      p.line = toks_[r.first].line;
      size_t attr = r.second;
      for (size_t k = r.first; k + 1 < r.second; ++k)
        if (is(k, "[") && is(k + 1, "[")) {
          attr = k;
          break;
        }
      size_t name = attr;
      while (name > r.first && !ident(name - 1)) --name;
      if (name == r.first || attr == r.second) {
        error(p.line, "kernel '" + f.name + "': every parameter needs a name and an attribute such as [[buffer(0)]]");
        return;
      }
      p.name = text(name - 1);
      p.type = type_text(r.first, name - 1);
      p.attr = text(attr + 2);
      if (is(attr + 3, "(")) p.index = std::atoi(text(attr + 4).c_str());
      bool pointer = !p.type.empty() && p.type.back() == '*';
      bool reference = !p.type.empty() && p.type.back() == '&';
      if (p.attr == "buffer" || p.attr == "threadgroup") {
        if (p.index < 0 || p.index >= 31) {
          error(p.line, "[[" + p.attr + "(" + std::to_string(p.index) + ")]]: Metal has 31 " + p.attr +
                            " slots, numbered 0 to 30");
          return;
        }
        if (!pointer && !reference) {
          error(p.line, "kernel '" + f.name + "': [[" + p.attr + "]] parameter '" + p.name +
                            "' must be a pointer or a reference");
          return;
        }
      } else if (!position_fields().count(p.attr) && !index_fields().count(p.attr)) {
        error(p.line, "kernel '" + f.name + "': parameter attribute [[" + p.attr + "]] is not supported by the host backend");
        return;
      }
      std::string decl = p.type + " " + p.name;
      if (p.attr == "buffer" && pointer && checks_)
        decl = "smelt_detail::checked<" + p.type.substr(0, p.type.size() - 1) + "> " + p.name;
      sig += (sig.empty() ? "" : ", ") + decl;
      f.params.push_back(p);
    }
    replace(open, close, "(" + sig + ")");
  }

  // ---- token rewrites -----------------------------------------------------------------------
  void rewrite_tokens() {
    // Function bodies first: threadgroup storage declarations.
    for (auto& f : funcs_) rewrite_threadgroup_storage(f);
    static const std::map<std::string, std::string> rejected = {
        {"double", "the double type is not supported by Metal"},
        {"new", "dynamic allocation (new) is not supported by Metal"},
        {"delete", "dynamic allocation (delete) is not supported by Metal"},
        {"throw", "exceptions are not supported by Metal"},
        {"try", "exceptions are not supported by Metal"},
        {"catch", "exceptions are not supported by Metal"},
        {"goto", "goto is not supported by Metal"},
        {"virtual", "virtual functions are not supported by Metal"},
        {"typeid", "run-time type information is not supported by Metal"},
        {"dynamic_cast", "run-time type information is not supported by Metal"},
        {"thread_local", "thread_local is not part of MSL"},
        {"printf", "printf is not available in MSL"},
        {"malloc", "malloc is not available in MSL"},
    };
    for (size_t i = 0; i < toks_.size() && errors_.empty(); ++i) {
      if (covered_[i]) continue;
      const Token& t = toks_[i];
      if (t.kind == Kind::Directive) {
        rewrite_directive(i);
      } else if (t.kind == Kind::Number) {
        rewrite_number(i);
      } else if (t.kind == Kind::Ident) {
        std::string s = text(i);
        auto r = rejected.find(s);
        if (r != rejected.end()) error(t.line, "'" + s + "': " + r->second);
        else if (s == "std" && is(i + 1, "::")) error(t.line, "the C++ standard library (std::) is not available in MSL");
        else if (s == "device" || s == "thread" || s == "threadgroup") replace(i, i, "");
        else if (s == "constant") replace(i, i, is(i + 1, "const") || (i > 0 && is(i - 1, "const")) ? "" : "const");
      } else if (is(i, "[") && !is(i + 1, "[") && (i == 0 || !is(i - 1, "[")) && (is(i + 1, "]") || is(i + 1, "&") || is(i + 1, "="))) {
        bool after_value = i > 0 && (ident(i - 1) || is(i - 1, ")") || is(i - 1, "]") || toks_[i - 1].kind == Kind::Number);
        if (!after_value) error(t.line, "lambda expressions are not supported by Metal");
      }
    }
    for (auto& f : funcs_) check_recursion(f);
  }

  void rewrite_directive(size_t i) {
    std::string d = text(i);
    size_t p = d.find_first_not_of(" \t", 1);
    if (p == std::string::npos || d.compare(p, 7, "include") != 0) return;
    size_t lt = d.find('<'), gt = d.find('>');
    std::string header = lt != std::string::npos && gt != std::string::npos ? d.substr(lt + 1, gt - lt - 1) : "";
    if (header.compare(0, 6, "metal_") == 0) replace(i, i, "#include <metal_stdlib>");
    else error(toks_[i].line, "the host backend supports only <metal_stdlib> and the <metal_*> headers, not " + d.substr(p + 7));
  }

  // Floating literals without a suffix are float in MSL (no double); 1.0h is half.
  void rewrite_number(size_t i) {
    std::string s = text(i);
    bool hex = s.size() > 1 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
    bool is_float = hex ? s.find_first_of("pP") != std::string::npos : s.find_first_of(".eE") != std::string::npos;
    if (!is_float) return;
    size_t core = s.size();
    while (core > 0 && std::strchr("fFhHlL", s[core - 1])) --core;
    std::string suffix = s.substr(core);
    if (suffix.empty()) replace(i, i, s + "f");
    else if (suffix == "h" || suffix == "H") replace(i, i, "((half)" + s.substr(0, core) + "f)");
    else if (suffix == "l" || suffix == "L") error(toks_[i].line, "long double literals are not supported by Metal");
  }

  // `threadgroup T name[N];` inside a function: one instance per threadgroup. Every GPU thread of
  // a threadgroup runs on the same worker thread, so thread_local storage is exactly that.
  void rewrite_threadgroup_storage(Function& f) {
    std::vector<std::pair<std::string, int>> declared;  // name, brace depth
    int depth = 0;
    for (size_t i = f.body_open; i < f.body_close && errors_.empty(); ++i) {
      if (is(i, "{")) ++depth;
      if (is(i, "}")) {
        --depth;
        while (!declared.empty() && declared.back().second > depth) declared.pop_back();
      }
      if (!is(i, "threadgroup")) continue;
      size_t semi = i + 1;
      int nest = 0;
      bool pointer = false, comma = false, init = false;
      size_t first_bracket = 0;
      for (; semi < f.body_close; ++semi) {
        if (is(semi, "(") || is(semi, "<")) ++nest;
        if (is(semi, ")") || is(semi, ">")) --nest;
        if (nest == 0 && is(semi, ";")) break;
        if (nest == 0 && first_bracket == 0 && (is(semi, "*") || is(semi, "&"))) pointer = true;
        if (nest == 0 && is(semi, ",")) comma = true;
        if (nest == 0 && is(semi, "=") && first_bracket == 0) init = true;
        if (is(semi, "[") && first_bracket == 0) first_bracket = semi;
      }
      if (pointer) continue;  // a pointer or reference into threadgroup memory: the keyword goes
      int line = toks_[i].line;
      if (comma) {
        error(line, "declare one threadgroup variable per statement (the host backend needs it)");
        return;
      }
      if (init) {
        error(line, "threadgroup variables cannot have initializers");
        return;
      }
      size_t name_end = first_bracket ? first_bracket : semi;
      size_t name = name_end - 1;
      if (!ident(name) || name <= i + 1) {
        error(line, "cannot read this threadgroup declaration");
        return;
      }
      std::string nm = text(name), storage = "smelt_tg_" + nm;
      std::string dims;
      for (size_t k = name_end; k < semi; ++k) dims += text(k);
      declared.push_back({nm, depth});
      std::string sum;
      for (auto& d : declared) sum += (sum.empty() ? "" : " + ") + std::string("sizeof(smelt_tg_") + d.first + ")";
      // The size is checked here at compile time, and reported at run time so that the runtime can
      // check it together with the dispatch's [[threadgroup(i)]] memory.
      std::string out = "static thread_local " + type_text(i + 1, name) + " " + storage + dims + "; auto& " + nm +
                        " = " + storage + "; static_assert(" + sum +
                        " <= 32768, \"threadgroup memory declared in this function exceeds Metal's 32 KiB\"); "
                        "smelt_api->threadgroup_static_bytes(" + sum + ");";
      replace(i, semi, out);
    }
  }

  void check_recursion(const Function& f) {
    for (size_t i = f.body_open; i < f.body_close; ++i)
      if (ident(i) && text(i) == f.name && is(i + 1, "(") && !(i > 0 && (is(i - 1, ".") || is(i - 1, "->")))) {
        error(toks_[i].line, "'" + f.name + "' calls itself: Metal does not support recursion");
        return;
      }
  }

  // ---- analysis and launchers ---------------------------------------------------------------
  std::map<std::string, bool> fiber_needs() {
    std::map<std::string, std::set<std::string>> calls;
    std::map<std::string, bool> needs;
    for (auto& f : funcs_) {
      bool& n = needs[f.name];
      for (size_t i = f.body_open; i < f.body_close; ++i) {
        if (!ident(i)) continue;
        std::string s = text(i);
        if (s == "threadgroup_barrier" || s == "simdgroup_barrier" || s.compare(0, 5, "simd_") == 0 ||
            s.compare(0, 10, "simdgroup_") == 0 || s.compare(0, 5, "quad_") == 0)
          n = true;
        if (is(i + 1, "(") || is(i + 1, "<")) calls[f.name].insert(s);
      }
    }
    for (bool changed = true; changed;) {
      changed = false;
      for (auto& c : calls)
        for (auto& callee : c.second) {
          auto it = needs.find(callee);
          if (it != needs.end() && it->second && !needs[c.first]) needs[c.first] = changed = true;
        }
    }
    return needs;
  }

  void check_instances() {
    std::set<std::string> names;
    for (auto& f : funcs_)
      if (f.is_kernel && !f.is_template && !names.insert(f.name).second) error(f.line, "two kernels named '" + f.name + "'");
    for (auto& in : insts_) {
      const Function* f = kernel(in.function);
      if (!f) error(in.line, "'" + in.function + "' is not a kernel template defined in this source");
      else if (!names.insert(in.host_name).second) error(in.line, "host_name '" + in.host_name + "' is used twice");
    }
  }

  const Function* kernel(const std::string& name) const {
    for (auto& f : funcs_)
      if (f.is_kernel && f.name == name) return &f;
    return nullptr;
  }

  // Each argument is a proxy that converts to whatever type the parameter has, so launchers of
  // template instances never spell a type that depends on the template's parameters.
  std::string argument(const Param& p) const {
    std::string slot = std::to_string(p.index);
    bool pointer = p.type.back() == '*';
    if (p.attr == "buffer")
      return std::string(pointer ? "smelt_detail::buffer_ptr" : "smelt_detail::buffer_ref") + "{L, " + slot + "u, " +
             (checks_ ? "true" : "false") + "}";
    if (p.attr == "threadgroup")
      return std::string(pointer ? "smelt_detail::raw_ptr" : "smelt_detail::raw_ref") + "{L->threadgroup[" + slot + "]}";
    auto pos = position_fields().find(p.attr);
    if (pos != position_fields().end())
      return "smelt_detail::position_arg{" + (pos->second == "grid" ? std::string("L->grid->group") : "T->" + pos->second) + "}";
    const std::string& field = index_fields().at(p.attr);
    return "smelt_detail::index_arg{" + (field.empty() ? std::string("SMELT_SIMD_WIDTH") : "T->" + field) + "}";
  }

  std::string assemble(std::vector<KernelInfo>& kernels) {
    std::sort(edits_.begin(), edits_.end(), [](const Edit& a, const Edit& b) { return a.begin < b.begin; });
    std::string body;
    size_t at = 0;
    for (auto& e : edits_) {
      body.append(src_, at, e.begin - at);
      body += e.text;
      at = e.end;
    }
    body.append(src_, at, std::string::npos);

    std::map<std::string, bool> needs = fiber_needs();
    std::string out = "#include <metal_stdlib>\n#line 1 \"" + std::string(kSourceName) + "\"\n" + body +
                      "\n#line 1 \"smelt-launchers\"\n"
                      "extern \"C\" {\n"
                      "const smelt_hk_api* smelt_api = 0;\n"
                      "__attribute__((visibility(\"default\"))) void smelt_module_init(const smelt_hk_api* a) { smelt_api = a; }\n";
    auto launcher = [&](const Function& f, const std::string& host, const std::string& call) {
      KernelInfo k;
      k.name = host;
      k.needs_fibers = needs[f.name];
      std::string args;
      for (auto& p : f.params) {
        args += (args.empty() ? "" : ", ") + argument(p);
        if (p.attr == "buffer") k.buffer_mask |= 1u << p.index;
        if (p.attr == "threadgroup") k.threadgroup_mask |= 1u << p.index;
      }
      out += "__attribute__((visibility(\"default\"))) void smelt_kthread_" + host +
             "(const smelt_hk_launch* L, const smelt_hk_thread* T) { (void)L; (void)T; " + call + "(" + args + "); }\n";
      if (!k.needs_fibers)
        out += "__attribute__((visibility(\"default\"))) void smelt_kloop_" + host +
               "(const smelt_hk_launch* L, unsigned first, unsigned end) { smelt_detail::run_groups(L, first, end, "
               "[L](const smelt_hk_thread* T) { (void)T; " + call + "(" + args + "); }); }\n";
      kernels.push_back(k);
    };
    for (auto& f : funcs_)
      if (f.is_kernel && !f.is_template) launcher(f, f.name, f.name);
    for (auto& in : insts_) launcher(*kernel(in.function), in.host_name, in.function + "<" + in.template_args + ">");
    out += "}\n";
    return out;
  }
};

}  // namespace

Translation translate_msl(const std::string& msl, bool bounds_checks) { return Translator(msl, bounds_checks).run(); }

}  // namespace smelt_host

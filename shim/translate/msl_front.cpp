// The MSL front end (msl_front.h): tokens, then the file-scope structure and kernel signatures,
// then threadgroup declarations and the checks of what Metal rejects, then which functions
// synchronize. Errors stop at the first phase that has any.
#include "msl_front.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>

namespace smelt_msl {

std::string Source::spelling(size_t i) const { return text.substr(tokens[i].begin, tokens[i].end - tokens[i].begin); }

bool Source::is(size_t i, const char* s) const {
  if (i >= tokens.size()) return false;
  size_t n = std::strlen(s);
  return tokens[i].end - tokens[i].begin == n && text.compare(tokens[i].begin, n, s) == 0;
}

bool Source::ident(size_t i) const { return i < tokens.size() && tokens[i].kind == TokenKind::Ident; }

const Function* Source::kernel(const std::string& name) const {
  for (auto& f : functions)
    if (f.is_kernel && f.name == name) return &f;
  return nullptr;
}

std::string Source::type_text(size_t first, size_t end) const {
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
    t += spelling(k) + " ";
  }
  while (!t.empty() && t.back() == ' ') t.pop_back();
  return t;
}

namespace {

bool is_ident_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_ident_char(char c) { return is_ident_start(c) || (c >= '0' && c <= '9'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

// The thread attributes a kernel parameter may have besides buffer(i) and threadgroup(i); true for
// the vector-valued positions.
const std::map<std::string, bool>& builtin_attributes() {
  static const std::map<std::string, bool> m = {
      {"thread_position_in_grid", true},
      {"thread_position_in_threadgroup", true},
      {"threadgroup_position_in_grid", true},
      {"threads_per_threadgroup", true},
      {"threads_per_grid", true},
      {"threadgroups_per_grid", true},
      {"dispatch_threads_per_threadgroup", true},
      {"thread_index_in_threadgroup", false},
      {"thread_index_in_simdgroup", false},
      {"simdgroup_index_in_threadgroup", false},
      {"simdgroups_per_threadgroup", false},
      {"threads_per_simdgroup", false},
      {"thread_execution_width", false},
  };
  return m;
}

class Parser {
 public:
  Parser(const std::string& msl, const std::string& target) : target_(target) { s_.text = msl; }

  Source run() {
    tokenize();
    if (s_.errors.empty()) scan_top_level();
    if (s_.errors.empty()) check_bodies();
    if (s_.errors.empty()) check_instances();
    if (s_.errors.empty()) find_synchronizing();
    return std::move(s_);
  }

 private:
  Source s_;
  const std::string& target_;
  bool template_pending_ = false;

  std::string text(size_t i) const { return s_.spelling(i); }
  bool is(size_t i, const char* s) const { return s_.is(i, s); }
  bool ident(size_t i) const { return s_.ident(i); }
  size_t count() const { return s_.tokens.size(); }
  int line(size_t i) const { return s_.tokens[i].line; }

  void error(int line, const std::string& msg) {
    s_.errors += std::string(kSourceName) + ":" + std::to_string(line) + ": error: " + msg + "\n";
  }
  void mark(size_t first, size_t last) {
    for (size_t j = first; j <= last; ++j) s_.structural[j] = true;
  }

  // ---- tokens -------------------------------------------------------------------------------
  void tokenize() {
    const std::string& s = s_.text;
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
      TokenKind k;
      if (c == '#' && line_start) {
        while (i < n && s[i] != '\n') {
          if (s[i] == '\\' && i + 1 < n && s[i + 1] == '\n') {
            ++line;
            i += 2;
            continue;
          }
          ++i;
        }
        k = TokenKind::Directive;
      } else if (is_ident_start(c)) {
        while (i < n && is_ident_char(s[i])) ++i;
        k = TokenKind::Ident;
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
        k = TokenKind::Number;
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
        k = c == '"' ? TokenKind::String : TokenKind::Char;
      } else {
        if ((c == ':' && i + 1 < n && s[i + 1] == ':') || (c == '-' && i + 1 < n && s[i + 1] == '>')) i += 2;
        else ++i;
        k = TokenKind::Punct;
      }
      line_start = false;
      s_.tokens.push_back(Token{k, b, i, start_line});
    }
    s_.structural.assign(s_.tokens.size(), false);
  }

  // Index of the token closing the bracket opened at i ((, [, { or <), or count().
  size_t match(size_t i) const {
    std::string open = text(i);
    std::string close = open == "(" ? ")" : open == "[" ? "]" : open == "{" ? "}" : ">";
    int depth = 0;
    for (size_t j = i; j < count(); ++j) {
      if (s_.tokens[j].kind != TokenKind::Punct) continue;
      if (is(j, open.c_str())) ++depth;
      else if (is(j, close.c_str()) && --depth == 0) return j;
    }
    return count();
  }

  // ---- structure ----------------------------------------------------------------------------
  void scan_top_level() {
    bool pending_kernel = false;
    size_t n = count();
    for (size_t i = 0; i < n && s_.errors.empty();) {
      if (is(i, "template") && is(i + 1, "[")) {
        i = parse_instantiation(i);
        continue;
      }
      if (is(i, "[") && is(i + 1, "[")) {
        size_t close = match(i);
        if (close >= n) {
          error(line(i), "unterminated attribute");
          return;
        }
        bool kernel_attr = false;
        for (size_t j = i + 2; j < close; ++j)
          if (is(j, "kernel")) kernel_attr = true;
        pending_kernel = pending_kernel || kernel_attr;
        s_.markers.push_back(Marker{i, close, kernel_attr});
        mark(i, close);
        i = close + 1;
        continue;
      }
      if (is(i, "kernel")) {
        pending_kernel = true;
        s_.markers.push_back(Marker{i, i, true});
        mark(i, i);
        ++i;
        continue;
      }
      if (is(i, "threadgroup")) {
        error(line(i), "threadgroup variables must be declared inside a kernel function");
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
          error(line(i), "unbalanced parentheses");
          return;
        }
        size_t after = close + 1;
        while (is(after, "const")) ++after;
        if (is(after, "{")) {
          Function f;
          f.name = text(i);
          f.line = line(i);
          f.params_open = i + 1;
          f.params_close = close;
          f.body_open = after;
          f.body_close = match(after);
          f.is_kernel = pending_kernel;
          f.is_template = template_pending_;
          if (f.body_close >= n) {
            error(f.line, "unbalanced braces in function '" + f.name + "'");
            return;
          }
          if (f.is_kernel) parse_kernel_signature(f);
          s_.functions.push_back(f);
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

  // template [[host_name("name")]] [[kernel]] void function<args>(params);
  size_t parse_instantiation(size_t i) {
    size_t j = i + 1;
    Instantiation inst;
    inst.line = line(i);
    while (is(j, "[") && is(j + 1, "[")) {
      size_t close = match(j);
      for (size_t k = j + 2; k < close; ++k)
        if (is(k, "host_name") && is(k + 1, "(") && k + 2 < count() && s_.tokens[k + 2].kind == TokenKind::String) {
          std::string s = text(k + 2);
          inst.host_name = s.substr(1, s.size() - 2);
        }
      j = close + 1;
    }
    if (is(j, "kernel")) ++j;
    if (is(j, "void")) ++j;
    if (!ident(j) || !is(j + 1, "<")) {
      error(inst.line, "expected 'template [[host_name(\"name\")]] kernel void function<types>(parameters);'");
      return count();
    }
    inst.function = text(j);
    size_t close = match(j + 1);
    for (size_t k = j + 2; k < close; ++k) inst.template_args += text(k) + " ";
    size_t end = close + 1;
    while (end < count() && !is(end, ";")) ++end;
    if (inst.host_name.empty()) {
      error(inst.line, "explicit instantiation of '" + inst.function + "' needs [[host_name(\"...\")]]");
      return count();
    }
    inst.first = i;
    inst.last = end;
    if (end < count()) mark(i, end);
    s_.instantiations.push_back(inst);
    return end + 1;
  }

  void parse_kernel_signature(Function& f) {
    size_t open = f.params_open, close = f.params_close;
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
    for (auto& r : ranges) {
      Param p;
      p.line = line(r.first);
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
      p.type = s_.type_text(r.first, name - 1);
      for (size_t k = r.first; k < name - 1; ++k) {
        if (is(k, "device")) p.space = AddressSpace::Device;
        else if (is(k, "constant")) p.space = AddressSpace::Constant;
        else if (is(k, "threadgroup")) p.space = AddressSpace::Threadgroup;
        else if (is(k, "thread")) p.space = AddressSpace::Thread;
      }
      p.attr = text(attr + 2);
      if (is(attr + 3, "(")) p.index = std::atoi(text(attr + 4).c_str());
      p.pointer = !p.type.empty() && p.type.back() == '*';
      p.reference = !p.type.empty() && p.type.back() == '&';
      if (p.attr == "buffer" || p.attr == "threadgroup") {
        p.kind = p.attr == "buffer" ? ParamKind::Buffer : ParamKind::Threadgroup;
        if (p.index < 0 || p.index >= 31) {
          error(p.line, "[[" + p.attr + "(" + std::to_string(p.index) + ")]]: Metal has 31 " + p.attr +
                            " slots, numbered 0 to 30");
          return;
        }
        if (!p.pointer && !p.reference) {
          error(p.line, "kernel '" + f.name + "': [[" + p.attr + "]] parameter '" + p.name +
                            "' must be a pointer or a reference");
          return;
        }
      } else {
        auto builtin = builtin_attributes().find(p.attr);
        if (builtin == builtin_attributes().end()) {
          error(p.line, "kernel '" + f.name + "': parameter attribute [[" + p.attr + "]] is not supported by " + target_);
          return;
        }
        p.kind = builtin->second ? ParamKind::Position : ParamKind::Index;
      }
      f.params.push_back(p);
    }
    mark(open, close);
  }

  // ---- bodies and tokens --------------------------------------------------------------------
  void check_bodies() {
    for (auto& f : s_.functions) find_threadgroup_storage(f);
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
    for (size_t i = 0; i < count() && s_.errors.empty(); ++i) {
      if (s_.structural[i]) continue;
      const Token& t = s_.tokens[i];
      if (t.kind == TokenKind::Directive) {
        check_directive(i);
      } else if (t.kind == TokenKind::Number) {
        std::string s = text(i);
        bool hex = s.size() > 1 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
        bool is_float = hex ? s.find_first_of("pP") != std::string::npos : s.find_first_of(".eE") != std::string::npos;
        size_t core = s.size();
        while (core > 0 && std::strchr("fFhHlL", s[core - 1])) --core;
        if (is_float && (s.compare(core, std::string::npos, "l") == 0 || s.compare(core, std::string::npos, "L") == 0))
          error(t.line, "long double literals are not supported by Metal");
      } else if (t.kind == TokenKind::Ident) {
        std::string s = text(i);
        auto r = rejected.find(s);
        if (r != rejected.end()) error(t.line, "'" + s + "': " + r->second);
        else if (s == "std" && is(i + 1, "::")) error(t.line, "the C++ standard library (std::) is not available in MSL");
      } else if (is(i, "(") && is(i + 1, "*") && ident(i + 2) && is(i + 3, ")") && is(i + 4, "(")) {
        // `T (*f)(args)` declares a function pointer, and `(*f)(args)` calls through one
        error(t.line, "function pointers are not supported by Metal");
      } else if (is(i, "[") && !is(i + 1, "[") && (i == 0 || !is(i - 1, "[")) && (is(i + 1, "]") || is(i + 1, "&") || is(i + 1, "="))) {
        bool after_value = i > 0 && (ident(i - 1) || is(i - 1, ")") || is(i - 1, "]") || s_.tokens[i - 1].kind == TokenKind::Number);
        if (!after_value) error(t.line, "lambda expressions are not supported by Metal");
      }
    }
    for (auto& f : s_.functions) check_recursion(f);
  }

  void check_directive(size_t i) {
    std::string d = text(i);
    size_t p = d.find_first_not_of(" \t", 1);
    if (p == std::string::npos || d.compare(p, 7, "include") != 0) return;
    size_t lt = d.find('<'), gt = d.find('>');
    std::string header = lt != std::string::npos && gt != std::string::npos ? d.substr(lt + 1, gt - lt - 1) : "";
    if (header.compare(0, 6, "metal_") != 0)
      error(line(i), target_ + " supports only <metal_stdlib> and the <metal_*> headers, not " + d.substr(p + 7));
  }

  // `threadgroup T name[N];` in a body. A pointer or reference into threadgroup memory declares no
  // storage; a back end only drops its keyword.
  void find_threadgroup_storage(Function& f) {
    std::vector<std::pair<std::string, int>> declared;  // name, brace depth
    int depth = 0;
    for (size_t i = f.body_open; i < f.body_close && s_.errors.empty(); ++i) {
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
      if (pointer) continue;
      int at = line(i);
      if (comma) {
        error(at, "declare one threadgroup variable per statement (" + target_ + " needs it)");
        return;
      }
      if (init) {
        error(at, "threadgroup variables cannot have initializers");
        return;
      }
      size_t name_end = first_bracket ? first_bracket : semi;
      size_t name = name_end - 1;
      if (!ident(name) || name <= i + 1) {
        error(at, "cannot read this threadgroup declaration");
        return;
      }
      ThreadgroupDecl d;
      d.first = i;
      d.last = semi;
      d.type = s_.type_text(i + 1, name);
      d.name = text(name);
      for (size_t k = name_end; k < semi; ++k) d.dims += text(k);
      declared.push_back({d.name, depth});
      for (auto& x : declared) d.in_scope.push_back(x.first);
      d.line = at;
      f.threadgroup.push_back(d);
      mark(i, semi);
    }
  }

  void check_recursion(const Function& f) {
    for (size_t i = f.body_open; i < f.body_close; ++i)
      if (ident(i) && text(i) == f.name && is(i + 1, "(") && !(i > 0 && (is(i - 1, ".") || is(i - 1, "->")))) {
        error(line(i), "'" + f.name + "' calls itself: Metal does not support recursion");
        return;
      }
  }

  void check_instances() {
    std::set<std::string> names;
    for (auto& f : s_.functions)
      if (f.is_kernel && !f.is_template && !names.insert(f.name).second) error(f.line, "two kernels named '" + f.name + "'");
    for (auto& in : s_.instantiations) {
      if (!s_.kernel(in.function)) error(in.line, "'" + in.function + "' is not a kernel template defined in this source");
      else if (!names.insert(in.host_name).second) error(in.line, "host_name '" + in.host_name + "' is used twice");
    }
  }

  // ---- analysis -----------------------------------------------------------------------------
  // By name: a call does not say which overload it reaches, so all of a name's functions count.
  void find_synchronizing() {
    std::map<std::string, std::set<std::string>> calls;
    std::map<std::string, bool> sync;
    for (auto& f : s_.functions) {
      bool& n = sync[f.name];
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
          auto it = sync.find(callee);
          if (it != sync.end() && it->second && !sync[c.first]) sync[c.first] = changed = true;
        }
    }
    for (auto& f : s_.functions) f.synchronizes = sync[f.name];
  }
};

}  // namespace

Source parse(const std::string& msl, const std::string& target) { return Parser(msl, target).run(); }

namespace {

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r"), b = s.find_last_not_of(" \t\r");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

// Whether a condition names the version macros, and its value at `version` (ok false when it
// names them in a form other than `__METAL_VERSION__ OP N`, `defined(__HAVE_BFLOAT__)` or its
// negation with !, the forms #ifdef and #ifndef become here).
struct Condition {
  bool versioned = false, ok = true, value = false;
};

Condition evaluate(std::string c, int version) {
  Condition r;
  size_t comment = std::min(c.find("//"), c.find("/*"));
  if (comment != std::string::npos) c = c.substr(0, comment);
  c = trim(c);
  if (c.find("__METAL_VERSION__") == std::string::npos && c.find("__HAVE_BFLOAT__") == std::string::npos) return r;
  r.versioned = true;
  bool negate = false;
  while (!c.empty() && c[0] == '!') {
    negate = !negate;
    c = trim(c.substr(1));
  }
  std::string compact;
  for (char ch : c)
    if (ch != ' ' && ch != '\t') compact += ch;
  if (compact == "defined(__HAVE_BFLOAT__)" || compact == "__HAVE_BFLOAT__") {
    r.value = (version >= kMslVersion31) != negate;
    return r;
  }
  const std::string macro = "__METAL_VERSION__";
  if (!negate && compact.compare(0, macro.size(), macro) == 0) {
    std::string rest = compact.substr(macro.size());
    static const char* const ops[] = {">=", "<=", "==", "!=", ">", "<"};
    for (const char* op : ops) {
      size_t n = std::strlen(op);
      if (rest.compare(0, n, op) != 0) continue;
      std::string num = rest.substr(n);
      if (num.empty() || num.find_first_not_of("0123456789") != std::string::npos || num.size() > 6) break;
      int v = std::atoi(num.c_str());
      bool x = op[0] == '>' ? (op[1] == '=' ? version >= v : version > v)
               : op[0] == '<' ? (op[1] == '=' ? version <= v : version < v)
               : op[0] == '=' ? version == v
                              : version != v;
      r.value = x;
      return r;
    }
  }
  r.ok = false;
  return r;
}

}  // namespace

std::string select_version(const std::string& msl, int version, std::string& errors) {
  struct Level {
    bool versioned;  // evaluated here (else passed on to the C++ preprocessor)
    bool outer;      // the enclosing lines are kept
    bool taken;      // a branch of this conditional was kept already
    bool keep;       // the current branch's lines are kept
  };
  std::vector<Level> stack;
  std::string out;
  int line = 0;
  auto error = [&](const std::string& m) {
    errors += std::string(kSourceName) + ":" + std::to_string(line) + ": error: " + m + "\n";
  };
  size_t at = 0;
  while (at <= msl.size() && errors.empty()) {
    size_t nl = msl.find('\n', at);
    std::string text = msl.substr(at, nl == std::string::npos ? std::string::npos : nl - at);
    ++line;
    bool keep = stack.empty() || stack.back().keep;
    std::string t = trim(text);
    bool drop = !keep;
    if (!t.empty() && t[0] == '#') {
      std::string d = trim(t.substr(1));
      size_t sp = d.find_first_of(" \t(!");
      std::string word = d.substr(0, sp), arg = sp == std::string::npos ? "" : d.substr(sp);
      if (word == "if" || word == "ifdef" || word == "ifndef") {
        std::string c = word == "if" ? arg : (word == "ifdef" ? "defined(" : "!defined(") + trim(arg) + ")";
        Condition v = evaluate(c, version);
        if (v.versioned && !v.ok) error("the condition '" + trim(arg) + "' on the MSL version must be __METAL_VERSION__ compared with a number, or defined(__HAVE_BFLOAT__)");
        stack.push_back(v.versioned ? Level{true, keep, v.value, keep && v.value} : Level{false, keep, true, keep});
        drop = drop || v.versioned;
      } else if (word == "elif" || word == "else" || word == "endif") {
        if (stack.empty()) {
          error("#" + word + " without #if");
          break;
        }
        Level& top = stack.back();
        if (top.versioned) {
          drop = true;
          if (word == "endif") {
            stack.pop_back();
          } else if (word == "else") {
            top.keep = top.outer && !top.taken;
            top.taken = true;
          } else {
            Condition v = evaluate(arg, version);
            if (!v.versioned || !v.ok) error("#elif of a conditional on the MSL version must test the version too");
            top.keep = top.outer && !top.taken && v.value;
            top.taken = top.taken || v.value;
          }
        } else {
          if (word == "endif") stack.pop_back();
          drop = !top.outer;
        }
      }
    }
    if (!drop) out += text;
    if (nl == std::string::npos) break;
    out += '\n';
    at = nl + 1;
  }
  if (errors.empty() && !stack.empty()) {
    line = 0;
    errors += std::string(kSourceName) + ": error: #if without #endif\n";
  }
  return out;
}

}  // namespace smelt_msl

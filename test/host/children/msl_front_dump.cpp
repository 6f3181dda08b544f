// Built by test/host/translator.test.ts with nothing but the MSL front end
// (shim/translate/msl_front.cpp): prints what it finds in the MSL file named on the command line
// as JSON, or its errors.
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "msl_front.h"

using namespace smelt_msl;

static std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') out += "\\n";
    else out += c;
  }
  return out + "\"";
}

static const char* space_name(AddressSpace a) {
  switch (a) {
    case AddressSpace::Device: return "device";
    case AddressSpace::Constant: return "constant";
    case AddressSpace::Threadgroup: return "threadgroup";
    case AddressSpace::Thread: return "thread";
    default: return "none";
  }
}

static const char* kind_name(ParamKind k) {
  switch (k) {
    case ParamKind::Buffer: return "buffer";
    case ParamKind::Threadgroup: return "threadgroup";
    case ParamKind::Position: return "position";
    default: return "index";
  }
}

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  std::ifstream in(argv[1], std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  Source s = parse(text.str(), "this test");
  std::string out = "{\"errors\":" + json_string(s.errors) + ",\"functions\":[";
  for (size_t i = 0; i < s.functions.size(); ++i) {
    const Function& f = s.functions[i];
    out += std::string(i ? "," : "") + "{\"name\":" + json_string(f.name) + ",\"line\":" + std::to_string(f.line) +
           ",\"kernel\":" + (f.is_kernel ? "true" : "false") + ",\"template\":" + (f.is_template ? "true" : "false") +
           ",\"synchronizes\":" + (f.synchronizes ? "true" : "false") + ",\"params\":[";
    for (size_t j = 0; j < f.params.size(); ++j) {
      const Param& p = f.params[j];
      out += std::string(j ? "," : "") + "{\"name\":" + json_string(p.name) + ",\"kind\":\"" + kind_name(p.kind) +
             "\",\"space\":\"" + space_name(p.space) + "\",\"type\":" + json_string(p.type) + ",\"attr\":" + json_string(p.attr) +
             ",\"index\":" + std::to_string(p.index) + ",\"line\":" + std::to_string(p.line) + "}";
    }
    out += "],\"threadgroup\":[";
    for (size_t j = 0; j < f.threadgroup.size(); ++j) {
      const ThreadgroupDecl& d = f.threadgroup[j];
      std::string scope;
      for (size_t k = 0; k < d.in_scope.size(); ++k) scope += std::string(k ? "," : "") + json_string(d.in_scope[k]);
      out += std::string(j ? "," : "") + "{\"name\":" + json_string(d.name) + ",\"type\":" + json_string(d.type) +
             ",\"dims\":" + json_string(d.dims) + ",\"inScope\":[" + scope + "],\"line\":" + std::to_string(d.line) + "}";
    }
    out += "]}";
  }
  out += "],\"instantiations\":[";
  for (size_t i = 0; i < s.instantiations.size(); ++i) {
    const Instantiation& n = s.instantiations[i];
    out += std::string(i ? "," : "") + "{\"hostName\":" + json_string(n.host_name) + ",\"function\":" + json_string(n.function) +
           ",\"args\":" + json_string(n.template_args) + "}";
  }
  out += "]}\n";
  std::fputs(out.c_str(), stdout);
  return 0;
}

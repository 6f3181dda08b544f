// The front end of smelt's MSL translators, shared by every backend that does not compile MSL with
// Apple's compiler: it tokenizes a source, finds its functions, kernels and explicit template
// instantiations, reads kernel signatures and threadgroup declarations, works out which functions
// synchronize threads, and rejects what Metal rejects, naming the source line. A back end (the
// host's C++ one is shim/host/translate.cpp) rewrites the source from this description.
//
// Standard C++17 and no exceptions, with nothing of any one backend, so that every backend's build
// can compile it.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace smelt_msl {

// The file name error messages use for the MSL source.
constexpr const char* kSourceName = "kernel.metal";

enum class TokenKind { Ident, Number, Punct, String, Char, Directive };

struct Token {
  TokenKind kind;
  size_t begin, end;  // byte offsets into the source
  int line;
};

enum class AddressSpace { None, Device, Constant, Threadgroup, Thread };

enum class ParamKind {
  Buffer,       // [[buffer(i)]]: a pointer or reference into a bound buffer or constant bytes
  Threadgroup,  // [[threadgroup(i)]]: a pointer or reference into the dispatch's threadgroup memory
  Position,     // a vector-valued thread position attribute, such as thread_position_in_grid
  Index,        // a scalar one, such as thread_index_in_threadgroup
};

struct Param {
  ParamKind kind = ParamKind::Buffer;
  AddressSpace space = AddressSpace::None;
  std::string type;  // as C++ spells it: address spaces dropped, `constant` written `const`
  std::string name;
  std::string attr;  // the attribute's name: "buffer", "thread_position_in_grid", ...
  int index = -1;    // the argument of buffer(i) and threadgroup(i)
  bool pointer = false, reference = false;
  int line = 0;
};

// `threadgroup T name[N]...;` in a function body: storage shared by a threadgroup.
struct ThreadgroupDecl {
  size_t first = 0, last = 0;  // tokens from `threadgroup` to the `;`
  std::string type;            // the element type, address spaces dropped
  std::string name;
  std::string dims;            // the array dimensions as written ("[4][8]"), or empty
  // Threadgroup variables of the function in scope at this declaration, this one last: together
  // they are the function's threadgroup memory at this point.
  std::vector<std::string> in_scope;
  int line = 0;
};

struct Function {
  std::string name;
  int line = 0;
  size_t params_open = 0, params_close = 0;  // tokens ( and )
  size_t body_open = 0, body_close = 0;      // tokens { and }
  bool is_kernel = false;
  bool is_template = false;
  // Uses barriers, SIMD-group functions or simdgroup matrices, itself or through a function of the
  // same name it calls: its threads must be able to wait for each other.
  bool synchronizes = false;
  std::vector<Param> params;                    // kernels only
  std::vector<ThreadgroupDecl> threadgroup;     // declarations of threadgroup storage
};

// template [[host_name("name")]] [[kernel]] void function<args>(params);
struct Instantiation {
  std::string host_name, function, template_args;  // template_args: tokens joined by spaces
  size_t first = 0, last = 0;  // tokens from `template` to the `;`
  int line = 0;
};

// An attribute list at file scope, or the `kernel` keyword: a back end replaces it whole.
struct Marker {
  size_t first = 0, last = 0;  // tokens
  bool kernel = false;         // marks a kernel function ([[kernel]] or `kernel`)
};

struct Source {
  std::string text;
  std::vector<Token> tokens;
  // Tokens inside the markers, instantiations, kernel signatures and threadgroup declarations,
  // which a back end rewrites as wholes; the others it may rewrite one at a time.
  std::vector<bool> structural;
  std::vector<Marker> markers;
  std::vector<Function> functions;
  std::vector<Instantiation> instantiations;
  // "kernel.metal:LINE: error: MESSAGE" lines; the source is accepted when this is empty.
  std::string errors;

  std::string spelling(size_t token) const;
  bool is(size_t token, const char* s) const;
  bool ident(size_t token) const;
  // The first kernel function (template or not) of that name, or null.
  const Function* kernel(const std::string& name) const;
  // Tokens [first, end) as a C++ type: address spaces dropped, `constant` written `const`.
  std::string type_text(size_t first, size_t end) const;
};

// target names the backend in messages about what it lacks ("the host backend").
Source parse(const std::string& msl, const std::string& target);

// The MSL language versions the Metal shim selects: 3.0 (macOS 13) and 3.1 (macOS 14 and later,
// the first with bfloat), as __METAL_VERSION__ spells them.
constexpr int kMslVersion30 = 300;
constexpr int kMslVersion31 = 310;

// The source as Apple's compiler sees it at `version`: conditionals on __METAL_VERSION__ and on
// __HAVE_BFLOAT__ (defined from 3.1) are evaluated and the lines they exclude blanked, so that the
// front end never reads code of another version and line numbers stay the same. Other
// conditionals are left for the C++ preprocessor. On a malformed conditional, errors gets a
// "kernel.metal:LINE: error: ..." line.
std::string select_version(const std::string& msl, int version, std::string& errors);

}  // namespace smelt_msl

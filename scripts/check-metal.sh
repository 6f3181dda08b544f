#!/usr/bin/env bash
# check-metal.sh: compiles and links the Metal backend (shim/metal) against a macOS SDK from any
# OS, then checks that the dylib exports exactly the functions shim/include/smelt.h declares and
# exactly what the host backend exports. It does not run anything on a GPU; see docs/metal.md.
#
#   SMELT_MACOS_SDK=/path/to/MacOSX13.3.sdk scripts/check-metal.sh      (bun run check:metal)
#
# Exits 0 when SMELT_MACOS_SDK is unset (the check is skipped, and says so), nonzero on any
# compiler or linker warning, and on any symbol mismatch.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
sdk=${SMELT_MACOS_SDK:-}

if [ -z "$sdk" ]; then
  echo "check:metal skipped: SMELT_MACOS_SDK is not set (set it to a macOS 13.3 SDK root: on a Mac," \
    "\$(xcrun --sdk macosx --show-sdk-path); on Linux, a MacOSX13.3.sdk tree of headers and .tbd stubs," \
    "made as docs/metal.md describes)"
  exit 0
fi

fail() {
  echo "check:metal FAILED: $*" >&2
  exit 1
}

[ -f "$sdk/System/Library/Frameworks/Metal.framework/Headers/Metal.h" ] ||
  fail "SMELT_MACOS_SDK=$sdk has no Metal.framework headers"
[ -f "$sdk/usr/lib/libobjc.tbd" ] || fail "SMELT_MACOS_SDK=$sdk has no usr/lib/libobjc.tbd"
command -v zig >/dev/null || fail "zig is not on PATH (it compiles and links the Objective-C here)"

# An LLVM tool, by plain name, versioned Debian name, or (on a Mac) the Xcode name.
find_llvm_tool() {
  local name=$1 fallback=$2 v
  command -v "llvm-$name" 2>/dev/null && return 0
  for v in 20 19 18 17 16 15 14; do command -v "llvm-$name-$v" 2>/dev/null && return 0; done
  if [ -n "$fallback" ] && "$fallback" --version 2>/dev/null | grep -q LLVM; then
    command -v "$fallback"
    return 0
  fi
  return 1
}

nm_tool=$(find_llvm_tool nm nm || true)
objdump_tool=$(find_llvm_tool objdump objdump || true)
if [ -z "$nm_tool" ] || [ -z "$objdump_tool" ]; then
  command -v apt-get >/dev/null || fail "llvm-nm and llvm-objdump are missing and there is no apt-get to install them"
  echo "check:metal: installing llvm (for llvm-nm and llvm-objdump)"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq >/dev/null
  "${sudo_cmd[@]}" apt-get install -y -qq llvm >/dev/null
  nm_tool=$(find_llvm_tool nm nm) || fail "llvm-nm still missing after installing llvm"
  objdump_tool=$(find_llvm_tool objdump objdump) || fail "llvm-objdump still missing after installing llvm"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# ---- compile and link, warnings are failures ----

target=(-target aarch64-macos.13.0) # arm64-apple-macos13
cflags=("${target[@]}" -O2 -fobjc-arc -Wall -Wextra -Werror -fvisibility=hidden -fno-sanitize=undefined
  -isysroot "$sdk" -isystem "$sdk/usr/include" -iframework "$sdk/System/Library/Frameworks"
  -I "$root/shim/include")

objects=()
# compile SRC OBJ FLAGS...: warnings are failures too.
compile() {
  local src=$1 obj=$2
  shift 2
  if ! zig cc "${cflags[@]}" "$@" -c "$src" -o "$obj" 2>"$work/log"; then
    cat "$work/log" >&2
    fail "compiling ${src#"$root"/}"
  fi
  if [ -s "$work/log" ]; then
    cat "$work/log" >&2
    fail "compiling ${src#"$root"/} printed warnings"
  fi
  objects+=("$obj")
}
for src in "$root"/shim/metal/*.m; do
  compile "$src" "$work/$(basename "${src%.m}").o" -x objective-c
done
# The parts every backend shares, in C.
for src in "$root"/shim/common/*.c; do
  compile "$src" "$work/common-$(basename "${src%.c}").o" -std=c11 -x c
  grep -q "\"$(basename "$src")\"" "$root/build.zig" ||
    fail "${src#"$root"/} is in neither common_sources nor metal_common_sources of build.zig, so zig build would leave it out"
done
[ ${#objects[@]} -gt 0 ] || fail "no shim/metal/*.m files"
for src in "$root"/shim/metal/*.m; do
  grep -q "\"$(basename "$src")\"" "$root/build.zig" ||
    fail "${src#"$root"/} is not in build.zig's metal_sources, so zig build metal would leave it out"
done

dylib="$work/libsmelt_metal.dylib"
if ! zig cc "${target[@]}" -O2 -shared -o "$dylib" "${objects[@]}" \
  -F "$sdk/System/Library/Frameworks" -L "$sdk/usr/lib" \
  -framework Metal -framework Foundation -framework CoreGraphics -lobjc \
  -Wl,-install_name,@rpath/libsmelt_metal.dylib 2>"$work/log"; then
  cat "$work/log" >&2
  fail "linking libsmelt_metal.dylib"
fi
if [ -s "$work/log" ]; then
  cat "$work/log" >&2
  fail "linking libsmelt_metal.dylib printed warnings"
fi
echo "check:metal: compiled ${#objects[@]} files (shim/metal, shim/common) and linked libsmelt_metal.dylib (arm64-apple-macos13) against $sdk"

# ---- what the dylib is ----

check_macho() {
  local lib=$1 headers dylibs fw
  headers=$("$objdump_tool" --macho --private-header --private-headers "$lib")
  grep -q 'MH_MAGIC_64 *ARM64' <<<"$headers" || fail "$lib is not an arm64 Mach-O"
  grep -q 'DYLIB' <<<"$headers" || fail "$lib is not a dylib"
  awk '/cmd LC_BUILD_VERSION/{b=1} b&&/platform/{p=$2} b&&/minos/{m=$2; exit} END{exit !(p=="macos" && m=="13.0")}' \
    <<<"$headers" || fail "$lib does not say platform macos, minos 13.0 in LC_BUILD_VERSION"
  dylibs=$("$objdump_tool" --macho --dylibs-used "$lib")
  for fw in Metal Foundation CoreGraphics; do
    grep -q "/$fw.framework/" <<<"$dylibs" || fail "$lib does not load $fw.framework"
  done
}
check_macho "$dylib"

# ---- exported symbols ----

# Symbols every linker makes on its own; never part of the ABI.
linker_made='^(_mh_dylib_header|_mh_execute_header|__dso_handle|_init|_fini|_edata|_end|__bss_start)$'

header_symbols() {
  perl -0777 -ne 's{/\*.*?\*/}{}gs; s{//[^\n]*}{}g; print "$1\n" while /SMELT_API\s+[^;{}]*?\b(smelt_\w+)\s*\(/g' \
    "$root/shim/include/smelt.h" | sort -u
}

# Exported (external, defined) symbols of a library, without Mach-O's leading underscore.
exported_symbols() {
  local lib=$1 flags=(--extern-only --defined-only)
  case "$lib" in *.so) flags+=(-D) ;; esac
  "$nm_tool" "${flags[@]}" "$lib" | awk 'NF>=3 {print $3}' |
    { case "$lib" in *.dylib) sed 's/^_//' ;; *) cat ;; esac; } |
    grep -Ev "$linker_made" | sort -u
}

same_set() { # name_a file_a name_b file_b
  if ! diff -q "$2" "$4" >/dev/null; then
    echo "only in $1:" >&2
    comm -23 "$2" "$4" | sed 's/^/  /' >&2
    echo "only in $3:" >&2
    comm -13 "$2" "$4" | sed 's/^/  /' >&2
    return 1
  fi
}

header_symbols >"$work/header.txt"
n=$(wc -l <"$work/header.txt")
[ "$n" -gt 0 ] || fail "found no SMELT_API declarations in shim/include/smelt.h"
exported_symbols "$dylib" >"$work/metal.txt"
same_set smelt.h "$work/header.txt" libsmelt_metal.dylib "$work/metal.txt" ||
  fail "libsmelt_metal.dylib does not export exactly the functions of smelt.h"

# ---- the same through build.zig, and the host library; reported, not required ----

notes=()
cd "$root"
if zig build metal -Dmacos-sdk="$sdk" >"$work/zig-metal.log" 2>&1; then
  built="$root/zig-out/lib/libsmelt_metal.dylib"
  check_macho "$built"
  exported_symbols "$built" >"$work/built.txt"
  same_set smelt.h "$work/header.txt" "zig build metal's dylib" "$work/built.txt" ||
    fail "zig-out/lib/libsmelt_metal.dylib (zig build metal) does not export exactly the functions of smelt.h"
  echo "check:metal: zig build metal built zig-out/lib/libsmelt_metal.dylib with the same exports"
else
  notes+=("zig build metal not done: it failed ($(grep -m1 -i 'error' "$work/zig-metal.log" || tail -n1 "$work/zig-metal.log"))")
fi

host_done=0
if zig build >"$work/zig-host.log" 2>&1; then
  host=""
  for candidate in "$root/zig-out/lib/libsmelt_host.so" "$root/zig-out/lib/libsmelt_host.dylib"; do
    [ -f "$candidate" ] && host=$candidate && break
  done
  if [ -n "$host" ]; then
    exported_symbols "$host" >"$work/host.txt"
    same_set libsmelt_metal.dylib "$work/metal.txt" "$(basename "$host")" "$work/host.txt" ||
      fail "$(basename "$host") and libsmelt_metal.dylib export different symbols; the Metal dylib matches" \
        "smelt.h, so the host library is the one exporting more or less than the ABI"
    host_done=1
  else
    notes+=("host library comparison not done: zig build made no zig-out/lib/libsmelt_host.{so,dylib}")
  fi
else
  notes+=("host library comparison not done: zig build failed ($(grep -m1 -i 'error' "$work/zig-host.log" || tail -n1 "$work/zig-host.log"))")
fi

for note in ${notes[@]+"${notes[@]}"}; do echo "check:metal: $note"; done
if [ "$host_done" -eq 1 ]; then
  echo "check:metal: $n symbols match smelt.h and the host library"
else
  echo "check:metal: $n symbols match smelt.h (host library not compared)"
fi

# ---- the shipped MSL, with Apple's language rules as far as Linux allows ----
# The host translator front end refuses what Metal refuses (double, recursion, function pointers,
# lambdas, exceptions), its metal_stdlib refuses Metal's implicit-conversion errors, and at MSL 3.0
# bfloat does not exist: every file of metal/ must compile at both versions the shim selects.
if [ "$host_done" -eq 1 ] && command -v bun >/dev/null; then
  if (cd "$root" && bun test test/msl/versions.test.ts test/msl/conversions.test.ts) >"$work/msl.log" 2>&1; then
    echo "check:metal: every metal/*.metal compiles through the host translator at MSL 3.0 and 3.1"
  else
    cat "$work/msl.log" >&2
    fail "the shipped MSL does not compile through the host translator (test/msl/versions.test.ts)"
  fi
else
  echo "check:metal: shipped MSL not compiled (needs the host library and bun)"
fi

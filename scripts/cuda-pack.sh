#!/usr/bin/env bash
# Packs what the CUDA backend needs on a GPU machine that has no Bun, no Zig and no package
# registry into cuda-pack/ (git-ignored, about 45 MB): Bun itself (xz), the node_modules the
# tests and benchmarks load at run time, and the prebuilt native libraries. scripts/cuda-device.sh
# unpacks it there; docs/cuda.md gives the commands. BASE=REV also packs REV's tree (below).
set -euo pipefail
cd "$(dirname "$0")/.."

zig build
# Compressing Bun takes minutes: a bun.xz of the same Bun version is kept.
bun=$(command -v bun)
version=$(bun --version)
if [ "$(cat cuda-pack/bun.version 2>/dev/null)" != "$version" ] || [ ! -s cuda-pack/bun.xz ]; then
  rm -rf cuda-pack
  mkdir -p cuda-pack
  xz -T0 -6 -c "$(readlink -f "$bun")" > cuda-pack/bun.xz
  echo "$version" > cuda-pack/bun.version
fi
rm -rf cuda-pack/lib cuda-pack/lib.tar.xz cuda-pack/node_modules.tar.xz
mkdir -p cuda-pack/lib
cp zig-out/lib/libsmelt_cuda.so zig-out/lib/libsmelt_host.so cuda-pack/lib/
# Symbols are not needed there; the carried files must stay within the machine's 64 MiB.
if command -v strip > /dev/null; then strip --strip-unneeded cuda-pack/lib/*.so; fi
tar -cJf cuda-pack/lib.tar.xz -C cuda-pack lib
rm -rf cuda-pack/lib
# Run-time packages only: the tokenizer and template packages, fast-check and the dataset the
# training test learns for the tests, mitata for the benchmarks (the type checker stays behind).
modules=(node_modules/@huggingface node_modules/fast-check node_modules/pure-rand node_modules/@stdlib node_modules/mitata)
for m in "${modules[@]}"; do [ -e "$m" ] || { echo "cuda-pack: $m is missing; run bun install" >&2; exit 1; }; done
tar -cJf cuda-pack/node_modules.tar.xz "${modules[@]}"
# BASE=REV: REV's TypeScript, MSL and headers (not its native code, which must be this commit's) go along
# as base.tar.xz, for scripts/cuda-device.sh ab to time it beside the working tree on one machine.
rm -f cuda-pack/base.tar.xz cuda-pack/base-commit
if [ -n "${BASE:-}" ]; then
  # (shim/cuda/check.cpp is the offline checker, not part of the libraries)
  if ! git diff --quiet "$BASE" HEAD -- shim build.zig ':!shim/cuda/check.cpp'; then
    echo "cuda-pack: the native sources differ between $BASE and HEAD: the base would run on other native code" >&2
    exit 1
  fi
  git archive "$BASE" src metal bench shim build.zig package.json tsconfig.json | xz -T0 -6 > cuda-pack/base.tar.xz
  git rev-parse "$BASE" > cuda-pack/base-commit
fi
# The commit the pack was made from, "+dirty" when tracked files differ from it: the copy on the GPU
# machine has no history of its own to say so (bench/run.ts records it through SMELT_BENCH_COMMIT).
{ git rev-parse HEAD | tr -d '\n'; git diff --quiet HEAD -- || printf '+dirty'; echo; } > cuda-pack/commit
du -sh cuda-pack
ls -la cuda-pack

#!/usr/bin/env bash
# Packs what the CUDA backend needs on a GPU machine that has no Bun, no Zig and no package
# registry into cuda-pack/ (git-ignored, well under 60 MB): Bun itself (xz), the node_modules the
# tests and benchmarks load at run time, and the prebuilt native libraries. scripts/cuda-device.sh
# unpacks it there; docs/cuda.md gives the commands.
set -euo pipefail
cd "$(dirname "$0")/.."

zig build
rm -rf cuda-pack
mkdir -p cuda-pack/lib cuda-pack/bin
cp zig-out/lib/libsmelt_cuda.so zig-out/lib/libsmelt_host.so cuda-pack/lib/
cp zig-out/bin/smelt-cuda-check cuda-pack/bin/
bun=$(command -v bun)
xz -T0 -6 -c "$(readlink -f "$bun")" > cuda-pack/bun.xz
# Run-time packages only: the tokenizer and template packages, fast-check for the tests, mitata
# for the benchmarks (the type checker stays behind).
modules=(node_modules/@huggingface node_modules/fast-check node_modules/pure-rand node_modules/mitata)
for m in "${modules[@]}"; do [ -e "$m" ] || { echo "cuda-pack: $m is missing; run bun install" >&2; exit 1; }; done
tar -cJf cuda-pack/node_modules.tar.xz "${modules[@]}"
git rev-parse HEAD > cuda-pack/commit
du -sh cuda-pack
ls -la cuda-pack

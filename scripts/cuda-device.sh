#!/usr/bin/env bash
# Runs the CUDA backend's checks on a GPU machine, from the files scripts/cuda-pack.sh made
# (carried there as cuda-pack/). Logs go to $OUT (default ./cuda-out).
#
#   scripts/cuda-device.sh smoke   nvidia-smi, the CUDA tests and the MSL kernel tests    (~2-4 min)
#   scripts/cuda-device.sh suite   the whole test suite with SMELT_BACKEND=cuda           (~5-10 min)
#   scripts/cuda-device.sh race    compute-sanitizer racecheck and synccheck over the kernel tests
#   scripts/cuda-device.sh bench   bun run bench --backend cuda --peer torch
#
# Every stage first unpacks cuda-pack/ (once) and uses a kernel cache in .cuda-cache/, which a warm
# machine keeps between calls, so later stages compile only what earlier ones did not.
set -uo pipefail
cd "$(dirname "$0")/.."
stage=${1:-smoke}
OUT=${OUT:-$PWD/cuda-out}
mkdir -p "$OUT"

if [ -d cuda-pack ]; then
  mkdir -p .cuda-bin zig-out
  [ -x .cuda-bin/bun ] || { xz -dc cuda-pack/bun.xz > .cuda-bin/bun && chmod +x .cuda-bin/bun; }
  [ -d node_modules/fast-check ] || tar -xJf cuda-pack/node_modules.tar.xz
  tar -xJf cuda-pack/lib.tar.xz -C zig-out
  export PATH="$PWD/.cuda-bin:$PATH"
fi
command -v bun > /dev/null || { echo "cuda-device: no bun (run scripts/cuda-pack.sh and carry cuda-pack/)" >&2; exit 1; }
# The libraries were built elsewhere: never try to rebuild them with Zig here.
export SMELT_PREBUILT=1
export SMELT_CACHE_DIR="$PWD/.cuda-cache"
# NVRTC from the CUDA toolkit, unless SMELT_NVRTC names one.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
export PATH="/usr/local/cuda/bin:$PATH"
# Tests that open the host backend by name compile its kernels with a C++ compiler; without Zig
# there, g++ (13 or later has _Float16) is the one to try.
if ! command -v zig > /dev/null && [ -z "${SMELT_CXX:-}" ] && command -v g++ > /dev/null; then export SMELT_CXX=g++; fi

{
  echo "commit: $(cat cuda-pack/commit 2>/dev/null || git rev-parse HEAD 2>/dev/null)"
  nvidia-smi || echo "nvidia-smi failed"
  ls /usr/local/cuda/lib64/libnvrtc.so* 2>/dev/null
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

# Kernel tests: each one dispatches MSL kernels and compares with a reference.
kernel_tests=(test/msl/reduce.test.ts test/msl/scan.test.ts test/msl/simd.test.ts test/msl/softmax.test.ts
  test/msl/matmul.test.ts test/msl/atomics.test.ts test/msl/thread_ids.test.ts test/runtime/cuda.test.ts)

case "$stage" in
  smoke)
    SMELT_BACKEND=cuda bun test --timeout 120000 test/runtime/cuda.test.ts test/msl 2>&1 | tee "$OUT/smoke.log" | tail -40
    ;;
  suite)
    # The whole suite; bun prints each failing test, and the summary is the log's last lines.
    SMELT_BACKEND=cuda timeout "${SUITE_TIMEOUT:-560}" bun test --timeout 120000 ${SUITE_FILES:-} > "$OUT/suite.log" 2>&1
    echo "exit $?" >> "$OUT/suite.log"
    grep -E "^\(fail\)" "$OUT/suite.log" | head -80
    tail -8 "$OUT/suite.log"
    ;;
  race)
    # racecheck: shared-memory hazards (a missing threadgroup_barrier); synccheck: barriers that
    # not every thread reaches. Findings are fixed in the MSL, since Metal would hit them too.
    for tool in racecheck synccheck; do
      SMELT_BACKEND=cuda compute-sanitizer --tool "$tool" --target-processes all --print-limit 100 \
        --log-file "$OUT/$tool.txt" bun test --timeout 600000 "${kernel_tests[@]}" > "$OUT/$tool-tests.log" 2>&1
      echo "$tool: exit $?; $(grep -cE 'Race|Error|Hazard' "$OUT/$tool.txt" 2>/dev/null) report lines"
      tail -5 "$OUT/$tool.txt" 2>/dev/null
      tail -3 "$OUT/$tool-tests.log"
    done
    ;;
  bench)
    bun run bench --backend cuda --peer torch 2>&1 | tee "$OUT/bench.log" | tail -60
    cp bench/results/cuda-*.json "$OUT/" 2>/dev/null
    ;;
  *)
    echo "cuda-device: unknown stage $stage (smoke, suite, race, bench)" >&2
    exit 2
    ;;
esac

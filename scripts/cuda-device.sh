#!/usr/bin/env bash
# Runs the CUDA backend's checks on a GPU machine, from the files scripts/cuda-pack.sh made
# (carried there as cuda-pack/). Logs go to $OUT (default ./cuda-out), at most a few files, since
# the lent machines return only 8.
#
#   scripts/cuda-device.sh smoke          nvidia-smi, the CUDA tests and the MSL kernel tests (~2-4 min)
#   scripts/cuda-device.sh suite [N/M]    the whole suite with SMELT_BACKEND=cuda, its files split into
#                                         $JOBS chunks (default 8) run at once; N/M runs the Nth
#                                         of M parts of the file list only, so that each part fits
#                                         one 10-minute command (suite 1/2, then suite 2/2)
#   scripts/cuda-device.sh racecheck [F...] compute-sanitizer racecheck over the kernel tests, or
#                                         over the test files F (the generated kernel families)
#   scripts/cuda-device.sh synccheck      compute-sanitizer synccheck over test/msl, $JOBS at once
#   scripts/cuda-device.sh contention [N] N (default 6) copies of one test file at once on the GPU,
#                                         each with its own copy of one warmed kernel cache: the
#                                         check for the stream-ordering bug (docs/cuda.md)
#   scripts/cuda-device.sh bench          bun run bench --backend cuda --peer torch
#   scripts/cuda-device.sh shaped         writes SmolLM2's shapes with random weights to $SHAPED
#                                         (default /tmp/smollm2-shaped) unless there, for SMELT_LORA_MODEL
#   scripts/cuda-device.sh ab CMD...      CMD in the base tree (cuda-pack made with BASE=REV) and in
#                                         the working tree, alternately, twice each: logs ab-*.log
#   scripts/cuda-device.sh exec CMD...    any command in the same environment (bun on the PATH)
#
# Every stage first unpacks cuda-pack/ (once) and uses a kernel cache in .cuda-cache/, which a warm
# machine keeps between calls, so later stages compile only what earlier ones did not.
set -uo pipefail
cd "$(dirname "$0")/.."
stage=${1:-smoke}
shift || true
OUT=${OUT:-$PWD/cuda-out}
JOBS=${JOBS:-8}
mkdir -p "$OUT"

if [ -d cuda-pack ]; then
  mkdir -p .cuda-bin zig-out
  [ -x .cuda-bin/bun ] || { xz -dc cuda-pack/bun.xz > .cuda-bin/bun && chmod +x .cuda-bin/bun; }
  if [ ! -f node_modules/.cuda-pack ] || [ cuda-pack/node_modules.tar.xz -nt node_modules/.cuda-pack ]; then
    tar -xJf cuda-pack/node_modules.tar.xz && touch node_modules/.cuda-pack
  fi
  tar -xJf cuda-pack/lib.tar.xz -C zig-out
  export PATH="$PWD/.cuda-bin:$PATH"
fi
command -v bun > /dev/null || { echo "cuda-device: no bun (run scripts/cuda-pack.sh and carry cuda-pack/)" >&2; exit 1; }
# The libraries were built elsewhere: never try to rebuild them with Zig here.
export SMELT_PREBUILT=1
export SMELT_CACHE_DIR="$PWD/.cuda-cache"
[ -f cuda-pack/commit ] && export SMELT_BENCH_COMMIT="$(cat cuda-pack/commit)"
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
head -20 "$OUT/machine.txt"

# Splits the files given into $JOBS lists of about equal size (largest first, each to the
# smallest list so far), one list a line.
split_files() {
  for f in "$@"; do echo "$(wc -c < "$f") $f"; done | sort -rn | awk -v jobs="$JOBS" '
    { best = 0; for (j = 1; j < jobs; j++) if (size[j] < size[best]) best = j; size[best] += $1; list[best] = list[best] " " $2 }
    END { for (j = 0; j < jobs; j++) if (list[j] != "") print list[j] }'
}

# Runs `prefix... bun test --timeout 120000 FILES` once per list of split_files at once, each into
# a log of its own under $work, then joins the logs into $OUT/$1.log with a header per chunk and
# prints the failures and each chunk's summary.
run_chunks() {
  local name=$1 limit=$2
  shift 2
  local work
  work=$(mktemp -d)
  local -a prefix=()
  while [ "$1" != "--" ]; do prefix+=("$1"); shift; done
  shift
  local k=0
  while IFS= read -r list; do
    k=$((k + 1))
    # shellcheck disable=SC2086
    (SMELT_BACKEND=cuda timeout "$limit" "${prefix[@]}" bun test --timeout 120000 $list > "$work/$k.log" 2>&1
     echo "exit $?" >> "$work/$k.log") &
    echo "$list" > "$work/$k.files"
  done < <(split_files "$@")
  wait
  : > "$OUT/$name.log"
  for f in "$work"/*.log; do
    c=$(basename "$f" .log)
    { echo "=== chunk $c:$(cat "$work/$c.files")"; cat "$f"; } >> "$OUT/$name.log"
  done
  grep -E "^\(fail\)" "$OUT/$name.log" | head -80
  grep -E "^=== chunk|^ *[0-9]+ (pass|fail|skip)$|^exit " "$OUT/$name.log"
  rm -rf "$work"
}

kernel_tests=(test/msl/reduce.test.ts test/msl/scan.test.ts test/msl/simd.test.ts test/msl/softmax.test.ts
  test/msl/matmul.test.ts test/msl/atomics.test.ts test/msl/thread_ids.test.ts test/runtime/cuda.test.ts)

case "$stage" in
  smoke)
    SMELT_BACKEND=cuda bun test --timeout 120000 test/runtime/cuda.test.ts test/msl 2>&1 | tee "$OUT/smoke.log" | tail -40
    ;;
  suite)
    # The whole suite (or part N of M), in chunks at once: the GPU is shared by the chunks, the
    # 16 cores run their JavaScript and compiles. Each chunk stops at SUITE_TIMEOUT seconds.
    mapfile -t all < <(find test -name '*.test.ts' -not -path '*/node_modules/*' | sort)
    part=${1:-1/1}
    n=${part%/*} m=${part#*/}
    files=()
    for i in "${!all[@]}"; do [ $((i % m)) -eq $((n - 1)) ] && files+=("${all[$i]}"); done
    echo "suite part $part: ${#files[@]} files in $JOBS chunks"
    run_chunks "suite-${n}of${m}" "${SUITE_TIMEOUT:-540}" -- "${files[@]}"
    ;;
  racecheck)
    # Shared-memory hazards (a missing threadgroup_barrier). Findings are fixed in the MSL, since
    # Metal would hit them too.
    race_files=("$@")
    [ ${#race_files[@]} -gt 0 ] || race_files=("${kernel_tests[@]}")
    SMELT_BACKEND=cuda compute-sanitizer --tool racecheck --target-processes all --print-limit 100 \
      --log-file "$OUT/racecheck.txt" bun test --timeout 600000 "${race_files[@]}" > "$OUT/racecheck-tests.log" 2>&1
    echo "racecheck: exit $?; $(grep -cE 'Race|Error|Hazard' "$OUT/racecheck.txt" 2>/dev/null) report lines"
    tail -5 "$OUT/racecheck.txt" 2>/dev/null
    tail -3 "$OUT/racecheck-tests.log"
    ;;
  synccheck)
    # Barriers that not every thread of a block reaches, over every kernel test; the tool's
    # reports go into each chunk's log, which run_chunks joins.
    mapfile -t files < <(find test/msl test/runtime/cuda.test.ts -name '*.test.ts' | sort)
    run_chunks synccheck "${SANITIZER_TIMEOUT:-560}" compute-sanitizer --tool synccheck --target-processes all --print-limit 100 -- "${files[@]}"
    echo "synccheck: $(grep -cE '^========= (Barrier|Invalid|Error)' "$OUT/synccheck.log") report lines"
    grep -E "^========= ERROR SUMMARY" "$OUT/synccheck.log"
    ;;
  contention)
    # The bug this checks passed alone and failed only with the GPU shared: copies were reading
    # results before kernels on another stream had written them, which shows only when kernels
    # are slowed down. Separate processes, each on a copy of one warm cache so that every kernel
    # comes from the cache and dispatch is as fast as it gets (the failing case).
    # Alone at most WARM_TIMEOUT (220 s), the copies CONTENTION_TIMEOUT (300 s): one 10-minute
    # command holds both; SKIP_WARM=1 skips the first on a machine whose cache is already warm.
    copies=${1:-6}
    file=${CONTENTION_FILE:-test/tensor/elementwise.test.ts}
    summary() { grep -E "^ *[0-9]+ (pass|fail|skip)$" "$1" | tr -s ' \n' ' '; tail -1 "$1"; }
    if [ "${SKIP_WARM:-0}" != 1 ]; then
      # Warms .cuda-cache and is the baseline: alone, the file must pass.
      SMELT_BACKEND=cuda timeout "${WARM_TIMEOUT:-220}" bun test --timeout 120000 "$file" > "$OUT/contention-alone.log" 2>&1
      echo "exit $?" >> "$OUT/contention-alone.log"
      echo "alone: $(summary "$OUT/contention-alone.log")"
    fi
    work=$(mktemp -d)
    for k in $(seq "$copies"); do
      mkdir -p "$work/cache$k"
      cp -a "$SMELT_CACHE_DIR/." "$work/cache$k/" 2>/dev/null
    done
    for k in $(seq "$copies"); do
      (SMELT_CACHE_DIR="$work/cache$k" SMELT_BACKEND=cuda timeout "${CONTENTION_TIMEOUT:-300}" \
        bun test --timeout 120000 "$file" > "$work/$k.log" 2>&1
       echo "exit $?" >> "$work/$k.log") &
    done
    wait
    : > "$OUT/contention.log"
    for k in $(seq "$copies"); do
      { echo "=== copy $k of $copies: $file"; cat "$work/$k.log"; } >> "$OUT/contention.log"
      echo "copy $k: $(summary "$work/$k.log")"
    done
    echo "failures: $(grep -cE '^\(fail\)' "$OUT/contention.log") in all copies; the first ones:"
    grep -E "^\(fail\)|^error: " "$OUT/contention.log" | head -12
    rm -rf "$work"
    ;;
  bench)
    bun run bench --backend cuda --peer torch 2>&1 | tee "$OUT/bench.log" | tail -60
    cp bench/results/cuda-*.json "$OUT/" 2>/dev/null
    ;;
  shaped)
    SHAPED=${SHAPED:-/tmp/smollm2-shaped}
    [ -f "$SHAPED/model.safetensors" ] || python3 bench/smollm2_shaped.py "$SHAPED" > "$OUT/shaped.log" 2>&1 || { tail -5 "$OUT/shaped.log"; exit 1; }
    echo "SMELT_LORA_MODEL=$SHAPED"
    ;;
  ab)
    # The same command on two trees of one machine, alternately: GPUs of one kind differ from
    # machine to machine by as much as a change may gain (docs/cuda.md, the tenth run).
    [ -f cuda-pack/base.tar.xz ] || { echo "cuda-device: no base tree; make the pack with BASE=REV scripts/cuda-pack.sh" >&2; exit 2; }
    if [ ! -d cuda-base ]; then
      mkdir -p cuda-base && tar -xJf cuda-pack/base.tar.xz -C cuda-base
      ln -s "$PWD/node_modules" cuda-base/node_modules
      ln -s "$PWD/zig-out" cuda-base/zig-out
    fi
    for round in 1 2; do
      for tree in base new; do
        dir=.; [ "$tree" = base ] && dir=cuda-base
        (cd "$dir" && "$@") > "$OUT/ab-$tree-$round.log" 2>&1
        rc=$?
        commit=$(cat cuda-pack/commit); [ "$tree" = base ] && commit=$(cat cuda-pack/base-commit)
        echo "=== $tree ($commit), round $round: exit $rc"
        tail -n "${AB_TAIL:-12}" "$OUT/ab-$tree-$round.log"
      done
    done
    ;;
  exec)
    "$@"
    ;;
  *)
    echo "cuda-device: unknown stage $stage (smoke, suite, racecheck, synccheck, contention, bench, shaped, ab, exec)" >&2
    exit 2
    ;;
esac

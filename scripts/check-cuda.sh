#!/usr/bin/env bash
# Offline check of the CUDA backend, on any Linux machine (no GPU, no driver): every MSL kernel
# smelt has goes through the CUDA translator and NVRTC for a GPU architecture, and every one must
# compile. NVRTC alone is enough: `pip download nvidia-cuda-nvrtc-cu12` and unzip the wheel, or
# `pip install nvidia-cuda-nvrtc-cu12`; point SMELT_NVRTC at libnvrtc.so.* if it is not found.
#
#   scripts/check-cuda.sh [DIR...]     DIRs: more *.metal files, such as a test run's
#                                      SMELT_DUMP_MSL=DIR output (every kernel the suite generates)
#
# SMELT_CUDA_ARCH: compute capability to compile for (default 90: H100/H200).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${SMELT_NVRTC:-}" ]; then
  found=$(python3 - <<'PY' 2>/dev/null || true
import glob, os
try:
    import nvidia.cuda_nvrtc as m
    roots = list(m.__path__)
except Exception:
    roots = []
for root in roots:
    for path in sorted(glob.glob(os.path.join(root, "lib", "libnvrtc.so.*"))):
        if "builtins" not in path and ".alt." not in path:
            print(path)
            raise SystemExit
PY
)
  if [ -n "$found" ]; then export SMELT_NVRTC="$found"; fi
fi
if [ -z "${SMELT_NVRTC:-}" ] && ! ldconfig -p 2>/dev/null | grep -q 'libnvrtc\.so'; then
  echo "check-cuda: SKIPPED: no libnvrtc here (pip install nvidia-cuda-nvrtc-cu12, or set SMELT_NVRTC=/path/libnvrtc.so.12)"
  exit 0
fi

zig build
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# random.metal is compiled after the prelude, as src/exec/emit builds its kernels.
cat metal/prelude.metal metal/random.metal > "$work/prelude+random.metal"
files=(metal/prelude.metal metal/matmul.metal "$work/prelude+random.metal" test/kernels/*.metal)
for dir in "$@"; do
  while IFS= read -r -d '' f; do files+=("$f"); done < <(find "$dir" -name '*.metal' -print0 | sort -z)
done
echo "check-cuda: ${#files[@]} MSL files, NVRTC ${SMELT_NVRTC:-from the loader path}, sm_${SMELT_CUDA_ARCH:-90}"
./zig-out/bin/smelt-cuda-check --include shim/cuda/msl:shim/host/msl --arch "${SMELT_CUDA_ARCH:-90}" "${files[@]}"

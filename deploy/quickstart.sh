#!/usr/bin/env bash
# Installs what Tern needs, builds it, prepares the demo corpus (Debian's fortunes) and trains
# the demo job (config/llama-tiny.json), then samples from the trained model.
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/lib.sh
tern_install_deps
tern_build
BIN=build/bin

mkdir -p data .tern/models
if [ ! -f data/fortunes.idx ]; then
  inputs=()
  for f in /usr/share/games/fortunes/*; do
    case "$f" in *.dat|*.u8) continue ;; esac
    [ -f "$f" ] && inputs+=("$f")
  done
  "$BIN/tern" data prepare --tokenizer byte --input "${inputs[@]}" --output data/fortunes \
    --doc-separator % --val-fraction 0.01 --seed 1234
fi

"$BIN/tern" train config/llama-tiny.json --save-final .tern/models/llama-tiny
echo
echo "--- sample from the trained model ---"
"$BIN/tern" generate --model-dir .tern/models/llama-tiny --prompt "The " --max-new-tokens 300 \
  --temperature 0.8 --top-k 40 --seed 7

#!/usr/bin/env bash
# Final loss of config/llama-small.json (200 steps by default) on 4 ranks as 2 simulated nodes
# x 2 (`tern train --ranks 4 --ranks-per-node 2`, loopback) for ZeRO-3, each ZeRO++ feature
# alone and all three; one JSON line each with the final loss and its relative difference from
# ZeRO-3 (the goal: within 1% for qwZ or hpZ alone, 2% for all three).
#
# Usage (from the repository root, after a build):
#   tests/bench/zeropp/loss.sh [--bin build/bin] [--data PREFIX] [--steps 200] [--micro 2]
#                              [--variants "qwz hpz qgz all"]   (ZeRO-3 always runs first)
# Without --data it prepares the fortunes corpus (all of /usr/share/games/fortunes) in a
# temporary directory it removes afterwards.
set -euo pipefail

BIN=build/bin
DATA=""
STEPS=200
MICRO=2
VARIANTS="qwz hpz qgz all"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bin) BIN=$2; shift 2 ;;
    --data) DATA=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --micro) MICRO=$2; shift 2 ;;
    --variants) VARIANTS=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
REPO=$(cd "$(dirname "$0")/../../.." && pwd)
DIR=$(mktemp -d /tmp/tern-zeropp-loss-XXXXXX)
trap 'rm -rf "$DIR"' EXIT INT TERM
if [[ -z "$DATA" ]]; then
  cat /usr/share/games/fortunes/* 2>/dev/null | tr -d '\000' >"$DIR/corpus.txt" || true
  "$BIN/tern" data prepare --tokenizer byte --input "$DIR/corpus.txt" --output "$DIR/corpus" \
    --doc-separator % --val-fraction 0.02 --seed 1234 >/dev/null
  DATA=$DIR/corpus
fi

declare -A SETS=(
  [zero3]=""
  [qwz]="--set zero_optimization.zero_quantized_weights=true"
  [hpz]="--set zero_optimization.zero_hpz_partition_size=2"
  [qgz]="--set zero_optimization.zero_quantized_gradients=true"
  [all]="--set zero_optimization.zero_quantized_weights=true --set zero_optimization.zero_hpz_partition_size=2 --set zero_optimization.zero_quantized_gradients=true"
)
base=""
for v in zero3 $VARIANTS; do
  # shellcheck disable=SC2086
  "$BIN/tern" train "$REPO/config/llama-small.json" --json --ranks 4 --ranks-per-node 2 \
    --set "data.path=\"$DATA\"" --set "train_iters=$STEPS" --set eval_interval=0 \
    --set "train_micro_batch_size_per_gpu=$MICRO" ${SETS[$v]} >"$DIR/$v.out" 2>"$DIR/$v.err" ||
    { cat "$DIR/$v.err" >&2; exit 1; }
  loss=$(grep '"type":"step"' "$DIR/$v.out" | tail -1 | jq '.loss')
  [[ -z "$base" ]] && base=$loss
  jq -n -c --arg v "$v" --argjson loss "$loss" --argjson base "$base" --argjson steps "$STEPS" \
    '{bench: "zeropp_loss", variant: $v, steps: $steps, final_loss: $loss,
      rel_diff_vs_zero3: (($loss - $base) / $base)}'
done

#!/usr/bin/env bash
# step_overhead.sh SPEC CKPT_DIR [PAIRS] [STEPS]
# Step-time overhead of checkpointing EVERY step with `tern train`: runs the job with no
# checkpoints (A), async checkpoints (B) and blocking checkpoints (C), interleaved A B C A B C
# ..., and prints one JSON line per mode (median over runs of each run's median step time,
# which skips the first step) plus the overhead of B and C relative to A.
# Env: TERN (path to the tern binary), THREADS (compute threads; default all cores),
#      TERN_ARGS (extra flags for `tern train`, e.g. "--ranks 2").
set -euo pipefail
SPEC=${1:?usage: step_overhead.sh SPEC CKPT_DIR [PAIRS] [STEPS]}
DIR=${2:?checkpoint directory}
PAIRS=${3:-3}
STEPS=${4:-12}
HERE=$(cd "$(dirname "$0")" && pwd)
TERN=${TERN:-$HERE/../../../build/bin/tern}
THREADS=${THREADS:-$(nproc)}
command -v jq >/dev/null || { echo "jq is not installed" >&2; exit 1; }
[[ -x $TERN ]] || { echo "no tern at $TERN (set TERN)" >&2; exit 1; }

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

run() {  # run MODE -> median step ms of one run
  local mode=$1 extra=()
  rm -rf "$DIR/$mode"
  case $mode in
    none) ;;
    async) extra=(--set "checkpoint.dir=$DIR/$mode" --set checkpoint.interval=1 --set checkpoint.async=true) ;;
    blocking) extra=(--set "checkpoint.dir=$DIR/$mode" --set checkpoint.interval=1 --set checkpoint.async=false) ;;
  esac
  "$TERN" train "$SPEC" --json --threads "$THREADS" --set "train_iters=$STEPS" \
      --set eval_iters=0 "${extra[@]}" ${TERN_ARGS:-} >"$DIR/$mode.out"
  local ms ck
  ms=$(jq -r 'select(.type=="summary") | .step_ms_median' "$DIR/$mode.out")
  ck=$(jq -s '[.[] | select(.type=="step") | .checkpoint_ms] | .[1:] | sort | .[length/2|floor] // 0' "$DIR/$mode.out")
  echo "$ms $ck"
  rm -rf "$DIR/$mode"
}

mkdir -p "$DIR"
declare -A ms ck
for ((i = 0; i < PAIRS; i++)); do
  for mode in none async blocking; do
    read -r m c < <(run "$mode")
    ms[$mode]+="$m "
    ck[$mode]+="$c "
  done
done
base=$(tr ' ' '\n' <<<"${ms[none]}" | grep . | median)
for mode in none async blocking; do
  med=$(tr ' ' '\n' <<<"${ms[$mode]}" | grep . | median)
  ckm=$(tr ' ' '\n' <<<"${ck[$mode]}" | grep . | median)
  jq -cn --arg mode "$mode" --argjson med "$med" --argjson base "$base" --argjson ck "$ckm" \
     --arg runs "${ms[$mode]}" --argjson steps "$STEPS" \
     '{mode: $mode, steps: $steps, step_ms_median: $med, checkpoint_ms_median: $ck,
       overhead_pct: (100 * ($med - $base) / $base), runs_ms: ($runs | split(" ") | map(select(. != "") | tonumber))}'
done

#!/usr/bin/env bash
# step_overhead.sh SPEC CKPT_DIR [PAIRS] [STEPS]
# Step-time overhead of checkpointing EVERY step with `tern train`: runs the job with no
# checkpoints (A), async checkpoints (B) and blocking checkpoints (C), interleaved A B C A B C
# ..., and prints one JSON line per mode: the median over runs of each run's median step time
# and of each run's fastest step (both skip the first step; on a shared machine the fastest step
# is the least disturbed by other tenants), the overhead of B and C relative to A for both, and
# the median checkpoint stall (StepMetrics.checkpoint_ms) on the training thread.
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
  local ms ck mn
  ms=$(jq -r 'select(.type=="summary") | .step_ms_median' "$DIR/$mode.out")
  ck=$(jq -s '[.[] | select(.type=="step") | .checkpoint_ms] | .[1:] | sort | .[length/2|floor] // 0' "$DIR/$mode.out")
  mn=$(jq -s '[.[] | select(.type=="step") | .step_ms] | .[1:] | min' "$DIR/$mode.out")
  echo "$ms $ck $mn"
  rm -rf "$DIR/$mode"
}

mkdir -p "$DIR"
declare -A ms ck mn
for ((i = 0; i < PAIRS; i++)); do
  for mode in none async blocking; do
    read -r m c f < <(run "$mode")
    ms[$mode]+="$m "
    ck[$mode]+="$c "
    mn[$mode]+="$f "
  done
done
med_of() { tr ' ' '\n' <<<"$1" | grep . | median; }
base=$(med_of "${ms[none]}")
base_min=$(med_of "${mn[none]}")
for mode in none async blocking; do
  med=$(med_of "${ms[$mode]}")
  fast=$(med_of "${mn[$mode]}")
  ckm=$(med_of "${ck[$mode]}")
  jq -cn --arg mode "$mode" --argjson med "$med" --argjson base "$base" --argjson ck "$ckm" \
     --argjson fast "$fast" --argjson base_min "$base_min" \
     --arg runs "${ms[$mode]}" --arg mins "${mn[$mode]}" --argjson steps "$STEPS" \
     '{mode: $mode, steps: $steps, step_ms_median: $med, overhead_pct: (100 * ($med - $base) / $base),
       step_ms_min: $fast, overhead_min_pct: (100 * ($fast - $base_min) / $base_min),
       checkpoint_ms_median: $ck, stall_pct: (100 * $ck / $base_min),
       runs_median_ms: ($runs | split(" ") | map(select(. != "") | tonumber)),
       runs_min_ms: ($mins | split(" ") | map(select(. != "") | tonumber))}'
done

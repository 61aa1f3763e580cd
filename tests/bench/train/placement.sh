#!/usr/bin/env bash
# CPU placement, measured side by side on one machine with the quickstart's demo job
# (config/llama-tiny.json across 2 ranks, 16 sequences each):
#   cluster-bound    ternd + two 1-slot tern-workers, each --cpus on its own half (the quickstart)
#   cluster-unbound  the same with --no-bind-cores (before issue 18: each worker thinks it
#                    owns every core)
#   train-bound      tern train --ranks 2 (binding on, the default)
#   train-unbound    tern train --ranks 2 --no-bind-cores
# interleaved A B C D A B C D ..., REPS rounds. Prints one JSON line per run, then one summary
# JSON line with the median tokens/s of each configuration, the ratios and the load average.
#   tests/bench/train/placement.sh [REPS] [STEPS]     (needs build/bin and data/fortunes, or
#   DATA=/path/prefix). Results on the 2-CPU development VM: placement_2cpus.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../../.."
REPS=${1:-3}
STEPS=${2:-60}
BIN=${BIN:-$PWD/build/bin}
DATA=${DATA:-$PWD/data/fortunes}
WORK=$(mktemp -d /tmp/tern-placement-XXXXXX)
export TERN_PEAK_GFLOPS=1  # no sgemm measurement inside the runs
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

SETS=(--set data.path="$DATA" --set train_micro_batch_size_per_gpu=16 --set train_iters="$STEPS"
      --set eval_interval=0
      --set scheduler.params.warmup_num_steps=$((STEPS / 4)))
HALVES=()
mapfile -t HALVES < <("$BIN/tern-worker" --print-cpu-sets --slots 2 --log-level warn)

# Starts ternd and two workers ($1 = bound|unbound); sets COORD.
start_cluster() {
  local mode=$1 dir=$WORK/$1
  mkdir -p "$dir"
  "$BIN/ternd" --listen 127.0.0.1:0 --port-file "$dir/port" --http off --no-tensorboard \
    --state-dir "$dir/ternd" --log-level warn >"$dir/ternd.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do [ -s "$dir/port" ] && break; sleep 0.1; done
  COORD=127.0.0.1:$(cat "$dir/port")
  for i in 0 1; do
    local cpus=(--cpus "${HALVES[$i]}")
    [ "$mode" = unbound ] && cpus=(--no-bind-cores)
    "$BIN/tern-worker" --coordinator "$COORD" --name "w$i" --slots 1 "${cpus[@]}" \
      --scratch "$dir/w$i" --log-level warn >"$dir/w$i.log" 2>&1 &
    PIDS+=($!)
  done
  for _ in $(seq 100); do
    n=$(TERN_COORDINATOR=$COORD "$BIN/tern" workers --json 2>/dev/null | grep -c '"connected": true' || true)
    [ "${n:-0}" -ge 2 ] && break
    sleep 0.1
  done
}

# The summary line's tokens_per_s from JSON lines on stdin (the trainer's: tokens per step /
# the median step time, so a few steps slowed by other load barely move it).
summary_tps() {
  python3 -c '
import json, sys
v = None
for line in sys.stdin:
    try:
        d = json.loads(line)
    except ValueError:
        continue
    if d.get("kind") == "summary" or d.get("type") == "summary":
        v = d.get("tokens_per_s", v)
print(v if v is not None else "null")'
}

run() {  # label
  local label=$1 tps
  case $label in
    cluster-*)
      tps=$(TERN_COORDINATOR=$CLUSTER_COORD "$BIN/tern" submit config/llama-tiny.json --watch --json \
        "${SETS[@]}" --set resources.nodes=2 --set resources.ranks_per_node=1 | summary_tps) ;;
    train-bound)
      tps=$("$BIN/tern" train config/llama-tiny.json --ranks 2 --json "${SETS[@]}" 2>/dev/null |
        summary_tps) ;;
    train-unbound)
      tps=$("$BIN/tern" train config/llama-tiny.json --ranks 2 --no-bind-cores --json "${SETS[@]}" \
        2>/dev/null | summary_tps) ;;
  esac
  echo "{\"label\": \"$label\", \"tokens_per_s\": $tps, \"load\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}" |
    tee -a "$WORK/runs.jsonl"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
start_cluster bound
BOUND_COORD=$COORD
start_cluster unbound
UNBOUND_COORD=$COORD
for _ in $(seq "$REPS"); do
  CLUSTER_COORD=$BOUND_COORD run cluster-bound
  run train-bound
  CLUSTER_COORD=$UNBOUND_COORD run cluster-unbound
  run train-unbound
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$WORK/runs.jsonl" "$LOAD_BEFORE" "$LOAD_AFTER" "${HALVES[*]}" "$STEPS" <<'PYEOF'
import json, statistics, sys, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    d = json.loads(line)
    if d["tokens_per_s"] is not None:
        runs[d["label"]].append(d["tokens_per_s"])
med = {k: statistics.median(v) for k, v in runs.items()}
def ratio(a, b):
    return round(med[a] / med[b], 3) if a in med and b in med and med[b] else None
print(json.dumps({
    "summary": "placement",
    "steps": int(sys.argv[5]),
    "worker_cpus": sys.argv[4].split(" "),
    "median_tokens_per_s": {k: round(v) for k, v in sorted(med.items())},
    "runs": {k: [round(x) for x in v] for k, v in sorted(runs.items())},
    "cluster_bound_over_train_bound": ratio("cluster-bound", "train-bound"),  # issue 18: >= 0.95
    "cluster_unbound_over_train_bound": ratio("cluster-unbound", "train-bound"),
    "train_unbound_over_train_bound": ratio("train-unbound", "train-bound"),
    "loadavg_before": sys.argv[2], "loadavg_after": sys.argv[3],
}))
PYEOF

#!/usr/bin/env bash
# Elastic incidents on llama-tiny with a checkpoint every step, on one machine (loopback):
#   1. lost node: SIGKILL one of two workers mid-training; the job continues on the other;
#   2. grow: a worker joins while the job runs on one node; the job grows back to two;
#   3. preemption: SIGTERM to one of the two workers; the job continues on the other.
# For each: detect_s (incident -> ternd's round_stopped/grow event), resume_s (incident -> the
# first step of the next round), steps_lost (the last step the stopped round reported minus the
# step the next round resumed from: growing and draining checkpoint the step they stop after,
# so 0). Prints one JSON line per incident.
#
#   tests/bench/elastic/incidents.sh [BUILD_BIN_DIR]   (default build/bin)
#   HEARTBEAT=2s STEPS=300 tests/bench/elastic/incidents.sh
set -euo pipefail
B=$(realpath "${1:-build/bin}")
SRC=$(cd "$(dirname "$0")/../../.." && pwd)
HEARTBEAT=${HEARTBEAT:-2s}
STEPS=${STEPS:-300}
T=$(mktemp -d /tmp/tern-elastic-bench-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT

now_ms() { date +%s%3N; }

"$B/ternd" --listen 127.0.0.1:0 --port-file "$T/port" --state-dir "$T/state" \
  --http 127.0.0.1:0 --heartbeat-timeout "$HEARTBEAT" --checkpoint-root "$T/ckpt" \
  >"$T/ternd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [[ -s "$T/port" ]] && break; sleep 0.1; done
export TERN_COORDINATOR=127.0.0.1:$(cat "$T/port")
worker() {  # name
  "$B/tern-worker" --coordinator "$TERN_COORDINATOR" --name "$1" --slots 1 \
    --scratch "$T/$1" --rank-binary "$B/tern" --grace 1s >"$T/$1.log" 2>&1 &
  pids+=($!)
  echo $!
}
connected() {
  "$B/tern" workers --json | python3 -c \
    'import json,sys; print(sum(w.get("connected",False) for w in json.load(sys.stdin)["workers"]))'
}
wait_workers() { for _ in $(seq 200); do [[ $(connected) -ge $1 ]] && return; sleep 0.1; done; }

mkdir -p "$T/data"
"$B/tern" data prepare --tokenizer byte --input /usr/share/games/fortunes/fortunes \
  --output "$T/data/fortunes" --doc-separator % >/dev/null 2>&1 ||
  { for i in $(seq 2000); do echo "the quick brown fox $i jumps over the lazy dog"; echo %; done \
      >"$T/corpus.txt"
    "$B/tern" data prepare --tokenizer byte --input "$T/corpus.txt" --output "$T/data/fortunes" \
      --doc-separator % >/dev/null; }

python3 - "$SRC/config/llama-tiny.json" "$T" "$STEPS" >"$T/spec.json" <<'EOF'
import json, sys
spec = json.load(open(sys.argv[1]))
spec.update({
    "name": "elastic-bench",
    "data": {"path": sys.argv[2] + "/data/fortunes", "seq_len": 128},
    "train_micro_batch_size_per_gpu": 8, "train_batch_size": 16,
    "train_iters": int(sys.argv[3]), "eval_interval": 0, "steps_per_print": 1,
    "scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": 10}},
    "checkpoint": {"interval": 1, "keep_last": 3},
    "elastic": {"enabled": True, "min_nodes": 1, "max_nodes": 2},
    "resources": {"nodes": 2, "ranks_per_node": 1, "threads_per_rank": 1},
})
spec.pop("gradient_accumulation_steps", None)
print(json.dumps(spec))
EOF

worker w1 >/dev/null
w2=$(worker w2)
wait_workers 2
id=$("$B/tern" submit "$T/spec.json" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
"$B/tern" watch "$id" --json >"$T/watch.jsonl" 2>&1 &
pids+=($!)

# The newest step rank 0 reported, and in which round.
last_step() {
  python3 - "$T/watch.jsonl" <<'EOF'
import json, sys
step, rnd = 0, 0
for line in open(sys.argv[1]):
    try: j = json.loads(line)
    except ValueError: continue
    if j.get("type") == "metric" and j.get("kind") == "step" and j.get("rank") == 0:
        step, rnd = j["step"], j["round"]
print(step, rnd)
EOF
}
wait_step() {  # step round
  for _ in $(seq 1200); do
    read -r s r < <(last_step)
    [[ $r -ge $2 && $s -ge $1 ]] && return
    sleep 0.05
  done
  echo "timed out waiting for step $1 of round $2" >&2
  exit 1
}
# JSON summary of the incident that started at $1 (ms) leading to round $2.
incident() {  # name t0_ms round last_step_before
  python3 - "$T/watch.jsonl" "$@" <<'EOF'
import json, sys
path, name, t0, rnd, before = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
detect = first = resumed = None
world = None
last = 0
for line in open(path):
    try: j = json.loads(line)
    except ValueError: continue
    t = j.get("time_ms", 0)
    if j.get("type") == "event" and t >= t0 and detect is None and j.get("kind") in ("round_stopped", "grow"):
        detect = t
    if j.get("type") == "event" and j.get("kind") == "reshard" and t >= t0:
        world = json.loads(j["message"]).get("to_world")
    if j.get("type") == "event" and j.get("kind") == "resume" and t >= t0:
        resumed = json.loads(j["message"]).get("step")
    if j.get("type") == "metric" and j.get("kind") == "step" and j.get("round") == rnd and first is None:
        first = t
    if j.get("type") == "metric" and j.get("kind") == "step" and j.get("round") == rnd - 1:
        last = max(last, j["step"])
print(json.dumps({"incident": name, "detect_s": (detect - t0) / 1e3 if detect else None,
                  "resume_s": (first - t0) / 1e3 if first else None, "to_world": world,
                  "resumed_from_step": resumed,
                  "stopped_round_last_step": last,
                  "steps_lost": last - resumed if resumed is not None else None}))
EOF
}

# 1. Lost node.
wait_step 20 1
read -r before _ < <(last_step)
t0=$(now_ms)
kill -9 "$w2"
wait_step $((before + 1)) 2
incident lost_node "$t0" 2 "$before"

# 2. Grow: a worker joins the one-node job.
wait_step $((before + 20)) 2
read -r before _ < <(last_step)
t0=$(now_ms)
w3=$(worker w3)
wait_step $((before + 1)) 3
incident grow "$t0" 3 "$before"

# 3. Preemption: SIGTERM to the joined worker (it drains, then exits).
wait_step $((before + 20)) 3
read -r before _ < <(last_step)
t0=$(now_ms)
kill -TERM "$w3"
wait_step $((before + 1)) 4
incident preemption "$t0" 4 "$before"
"$B/tern" cancel "$id" >/dev/null 2>&1 || true

#!/usr/bin/env bash
# Runs tern-bench-train side by side with the PyTorch peers $PEERS/torch_train_step.py (single process)
# and torch_ddp_zero.py (2 ranks), interleaved A B A B, and prints a table of medians and ratios.
#   tests/bench/train/compare_peers.sh [train|ddp|all] [REPS]
# Output: one JSON line per run in $OUT (default /tmp/tern-compare.jsonl), then the table.
set -euo pipefail
cd "$(dirname "$0")/../../.."
WHAT=${1:-all}
REPS=${2:-3}
BENCH=${TERN_BENCH:-build/bin/tern-bench-train}
PEERS=${PEERS:?set PEERS to the directory holding the PyTorch peer programs (torch_train_step.py, torch_ddp_zero.py)}
PY=/usr/bin/python3
OUT=${OUT:-/tmp/tern-compare.jsonl}
: >"$OUT"

# name dim layers seq batch(single) batch(per rank, 2 ranks)
SIZES=("tiny 128 4 128 32 16" "small 256 6 256 8 4" "medium 512 8 512 2 1")

run() {  # label, command...
  local label=$1; shift
  "$@" 2>/dev/null | tail -n 1 | $PY -c "import json,sys; d=json.loads(sys.stdin.read()); d['label']='$label'; print(json.dumps(d))" >>"$OUT"
}

if [ "$WHAT" = train ] || [ "$WHAT" = all ]; then
  for s in "${SIZES[@]}"; do
    read -r name dim layers seq batch _ <<<"$s"
    for arch in llama gpt2; do
      for threads in 1 2; do
        args="--arch $arch --vocab 256 --dim $dim --layers $layers --heads 8 --seq $seq --batch $batch --steps 10 --threads $threads"
        for rep in $(seq "$REPS"); do
          run "train-$arch-$name-t$threads/tern" "$BENCH" $args
          run "train-$arch-$name-t$threads/torch" $PY "$PEERS/torch_train_step.py" $args
        done
      done
    done
  done
fi

if [ "$WHAT" = ddp ] || [ "$WHAT" = all ]; then
  for s in "${SIZES[@]}"; do
    read -r name dim layers seq _ per_rank <<<"$s"
    args="--arch llama --vocab 256 --dim $dim --layers $layers --heads 8 --seq $seq --batch $per_rank --steps 10 --threads 1"
    for rep in $(seq "$REPS"); do
      for stage in 0 1 2 3; do
        run "ddp-$name-zero$stage/tern" "$BENCH" $args --ranks 2 --zero-stage $stage
      done
      for mode in ddp zero1; do
        run "ddp-$name-$mode/torch" $PY "$PEERS/torch_ddp_zero.py" $args --world 2 --mode $mode
      done
    done
  done
fi

$PY - "$OUT" <<'PYEOF'
import json, statistics, sys, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    d = json.loads(line)
    if d.get("tokens_per_s"):
        rows[d["label"]].append(d)
def med(label, key):
    v = [r[key] for r in rows.get(label, []) if key in r]
    return statistics.median(v) if v else None
groups = sorted({l.split("/")[0] for l in rows})
print(f"{'config':32} {'tern tok/s':>11} {'torch tok/s':>11} {'ratio':>6} {'tern MFU':>8} {'tern ms':>8} {'torch ms':>8}")
for g in groups:
    if g.startswith("train"):
        t, p = med(g + "/tern", "tokens_per_s"), med(g + "/torch", "tokens_per_s")
        mfu = med(g + "/tern", "mfu")
        print(f"{g:32} {t or 0:11.0f} {p or 0:11.0f} {(t / p if t and p else 0):6.2f} {100 * (mfu or 0):7.1f}% "
              f"{med(g + '/tern', 'step_ms_median') or 0:8.1f} {med(g + '/torch', 'step_ms_median') or 0:8.1f}")
size_of = lambda g: g.split("-")[1]
for size in ["tiny", "small", "medium"]:
    best_torch = max([med(f"ddp-{size}-{m}/torch", "tokens_per_s") or 0 for m in ("ddp", "zero1")])
    for stage in range(4):
        g = f"ddp-{size}-zero{stage}/tern"
        t = med(g, "tokens_per_s")
        if t is None:
            continue
        b = [r.get("bytes_intra_node_per_step", 0) for r in rows[g]]
        print(f"{g:32} {t:11.0f} {best_torch:11.0f} {(t / best_torch if best_torch else 0):6.2f} "
              f"{100 * (med(g, 'mfu') or 0):7.1f}% {med(g, 'step_ms_median') or 0:8.1f} "
              f"bytes/step {statistics.median(b) / 1e6:.2f} MB")
    for m in ("ddp", "zero1"):
        g = f"ddp-{size}-{m}/torch"
        if g in rows:
            print(f"{g:32} {'':11} {med(g, 'tokens_per_s'):11.0f} {'':6} {'':8} {'':8} {med(g, 'step_ms_median'):8.1f} "
                  f"bytes/step {med(g, 'payload_bytes_per_step') / 1e6:.2f} MB")
PYEOF

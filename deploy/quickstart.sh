#!/usr/bin/env bash
# Tern quickstart: installs what Tern needs, builds it, prepares the demo corpus (Debian's
# fortunes), starts a local cluster — ternd and two tern-workers, state under .tern/ — submits
# the demo job (config/llama-tiny.json) across both workers, watches it to the end and samples
# from the trained model.
#
#   deploy/quickstart.sh           # the local cluster (leaves ternd and the workers running)
#   deploy/quickstart.sh --local   # no daemons: `tern train` in this process
#   deploy/quickstart.sh --down    # stop the local cluster
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STATE=$ROOT/.tern
BIN=$ROOT/build/bin
COORD=127.0.0.1:7070

down() {
  for f in "$STATE"/pids/*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$f"
  done
  echo "local cluster stopped"
}

case "${1:-}" in
  --down) down; exit 0 ;;
  --local|"") ;;
  *) echo "usage: $0 [--local | --down]" >&2; exit 2 ;;
esac

source deploy/lib.sh
tern_install_deps
tern_build

mkdir -p data "$STATE"/models
if [ ! -f data/fortunes.idx ]; then
  inputs=()
  for f in /usr/share/games/fortunes/*; do
    case "$f" in *.dat|*.u8) continue ;; esac
    [ -f "$f" ] && inputs+=("$f")
  done
  "$BIN/tern" data prepare --tokenizer byte --input "${inputs[@]}" --output data/fortunes \
    --doc-separator % --val-fraction 0.01 --seed 1234
fi

sample() {
  echo
  echo "--- sample from the trained model ---"
  "$BIN/tern" generate "$@" --prompt "The " --max-new-tokens 300 --temperature 0.8 --top-k 40 --seed 7
}

if [ "${1:-}" = "--local" ]; then
  "$BIN/tern" train config/llama-tiny.json --save-final "$STATE/models/llama-tiny"
  sample --model-dir "$STATE/models/llama-tiny"
  exit 0
fi

# The local cluster: one coordinator and two single-slot workers (one "node" each, each on its
# own half of the machine's CPUs). The job
# keeps the single-process run's global batch (2 ranks x 16 sequences).
down >/dev/null
mkdir -p "$STATE/pids" "$STATE/logs"
start() {  # name, command...
  local name=$1; shift
  nohup "$@" >"$STATE/logs/$name.log" 2>&1 &
  echo $! >"$STATE/pids/$name.pid"
}
start ternd "$BIN/ternd" --listen "$COORD" --state-dir "$STATE/ternd"
# Two workers on one machine: each gets its own half of the CPUs (whole cores, NUMA nodes kept
# together), so their ranks do not compete for cores.
mapfile -t HALVES < <("$BIN/tern-worker" --print-cpu-sets --slots 2 --log-level warn)
for i in 0 1; do
  w=$([ $i = 0 ] && echo a || echo b)
  start "worker-$w" "$BIN/tern-worker" --coordinator "$COORD" --name "worker-$w" --slots 1 \
    --cpus "${HALVES[$i]}" --scratch "$STATE/worker-$w"
done
export TERN_COORDINATOR=$COORD
for _ in $(seq 100); do
  n=$("$BIN/tern" workers --json 2>/dev/null | grep -o '"name"' | wc -l || true)
  [ "${n:-0}" -ge 2 ] && break
  sleep 0.2
done
"$BIN/tern" workers
echo "dashboard: http://127.0.0.1:8080/  (Prometheus: /metrics)"

CKPT=$STATE/checkpoints/llama-tiny
rm -rf "$CKPT"
"$BIN/tern" submit config/llama-tiny.json --watch \
  --set data.path="$ROOT/data/fortunes" --set resources.nodes=2 --set resources.ranks_per_node=1 \
  --set train_micro_batch_size_per_gpu=16 \
  --set checkpoint.dir="$CKPT"
sample --checkpoint "$CKPT"
echo
echo "The cluster is still running: $BIN/tern jobs | workers | watch JOB; stop it with $0 --down"

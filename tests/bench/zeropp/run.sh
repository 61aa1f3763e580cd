#!/usr/bin/env bash
# ZeRO++ on a slow link between two hosts. Two network namespaces ("hosts") joined by a veth
# pair whose ends are rate-limited with tc (tbf); ternd and one tern-worker in the first, a
# second tern-worker in the second, two rank slots each: config/llama-small.json on 2 nodes x
# 2 ranks. For every rate and every variant (ZeRO-3, qwZ, hpZ, qgZ, all three) it prints one
# JSON line: tokens/s (median over the steps after the first two), cross-node bytes per step
# from the veth counters (both directions, every byte the link carried, control traffic too)
# and from Tern's accounting (bytes_inter_node: every rank's bytes to other nodes), and the
# final loss.
#
# Usage (root; from the repository root, after a build):
#   tests/bench/zeropp/run.sh [--bin build/bin] [--rates "100mbit 1gbit"] [--steps 8]
#                             [--micro 2] [--variants "zero3 qwz hpz qgz all"]
# It creates and always removes its namespaces (and with them the veth pair), and uses only
# the addresses it assigns (10.214.X.1 and .2 on the veth).
set -euo pipefail

BIN=build/bin
RATES="100mbit 1gbit"
STEPS=8
MICRO=2
VARIANTS="zero3 qwz hpz qgz all"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bin) BIN=$2; shift 2 ;;
    --rates) RATES=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --micro) MICRO=$2; shift 2 ;;
    --variants) VARIANTS=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
BIN=$(realpath "$BIN")
REPO=$(cd "$(dirname "$0")/../../.." && pwd)

ID=$(( $$ % 100000 ))
NA=tzpp-a-$ID; NB=tzpp-b-$ID; VA=tzva$ID; VB=tzvb$ID
NET=10.214.$(( ID % 250 ))
ADDR_A=$NET.1; ADDR_B=$NET.2
DIR=$(mktemp -d /tmp/tern-zeropp-XXXXXX)
PIDS=()

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns del "$NA" 2>/dev/null || true
  ip netns del "$NB" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

ip netns add "$NA"
ip netns add "$NB"
ip link add "$VA" type veth peer name "$VB"
ip link set "$VA" netns "$NA"
ip link set "$VB" netns "$NB"
ip -n "$NA" addr add "$ADDR_A/24" dev "$VA"
ip -n "$NB" addr add "$ADDR_B/24" dev "$VB"
ip -n "$NA" link set "$VA" up
ip -n "$NB" link set "$VB" up
ip -n "$NA" link set lo up
ip -n "$NB" link set lo up

tx_bytes() {  # bytes both veth ends sent so far
  local a b
  a=$(ip netns exec "$NA" cat "/sys/class/net/$VA/statistics/tx_bytes")
  b=$(ip netns exec "$NB" cat "/sys/class/net/$VB/statistics/tx_bytes")
  echo $(( a + b ))
}

ip netns exec "$NA" "$BIN/ternd" --listen "$ADDR_A:0" --state-dir "$DIR/state" \
  --port-file "$DIR/port" --http 127.0.0.1:0 --heartbeat-timeout 5s >"$DIR/ternd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [[ -s "$DIR/port" ]] && break; sleep 0.1; done
COORD="$ADDR_A:$(cat "$DIR/port")"
for w in a b; do
  ns=$NA; [[ $w == b ]] && ns=$NB
  ip netns exec "$ns" "$BIN/tern-worker" --coordinator "$COORD" --name "w$w" --slots 2 \
    --scratch "$DIR/w$w" --rank-binary "$BIN/tern" --grace 1s >"$DIR/w$w.log" 2>&1 &
  PIDS+=($!)
done
TERN=(ip netns exec "$NA" env "TERN_COORDINATOR=$COORD" "$BIN/tern")
for _ in $(seq 100); do
  n=$("${TERN[@]}" workers --json 2>/dev/null | jq '[.workers[]? | select(.connected)] | length' \
      2>/dev/null || echo 0)
  [[ "$n" == 2 ]] && break
  sleep 0.1
done

# A corpus large enough for seq 256 (the fortunes the README uses, all of them).
cat /usr/share/games/fortunes/* 2>/dev/null | tr -d '\000' >"$DIR/corpus.txt" || true
"$BIN/tern" data prepare --tokenizer byte --input "$DIR/corpus.txt" --output "$DIR/corpus" \
  --doc-separator % --val-fraction 0.02 --seed 1234 >/dev/null

variant_sets() {
  case "$1" in
    zero3) ;;
    qwz) echo "--set zero_optimization.zero_quantized_weights=true" ;;
    hpz) echo "--set zero_optimization.zero_hpz_partition_size=2" ;;
    qgz) echo "--set zero_optimization.zero_quantized_gradients=true" ;;
    all) echo "--set zero_optimization.zero_quantized_weights=true" \
              "--set zero_optimization.zero_hpz_partition_size=2" \
              "--set zero_optimization.zero_quantized_gradients=true" ;;
  esac
}

for rate in $RATES; do
  ip netns exec "$NA" tc qdisc replace dev "$VA" root tbf rate "$rate" burst 256kbit latency 400ms
  ip netns exec "$NB" tc qdisc replace dev "$VB" root tbf rate "$rate" burst 256kbit latency 400ms
  for v in $VARIANTS; do
    before=$(tx_bytes)
    # shellcheck disable=SC2046
    "${TERN[@]}" submit "$REPO/config/llama-small.json" --watch --json \
      --set "data.path=\"$DIR/corpus\"" --set "train_iters=$STEPS" --set steps_per_print=1 \
      --set eval_interval=0 --set scheduler.params.warmup_num_steps=1 \
      --set "train_micro_batch_size_per_gpu=$MICRO" --set resources.threads_per_rank=1 \
      $(variant_sets "$v") >"$DIR/$v.out" 2>&1 || { cat "$DIR/$v.out" >&2; exit 1; }
    veth=$(( $(tx_bytes) - before ))
    jq -c -s --arg rate "$rate" --arg v "$v" --argjson veth "$veth" --argjson steps "$STEPS" '
      [.[] | select(.kind? == "step")] as $s
      | ($s | map(.tokens_per_s) | .[2:] | sort) as $t
      | {bench: "zeropp", rate: $rate, variant: $v, steps: $steps,
         tokens_per_s: (if ($t | length) > 0 then $t[($t | length) / 2 | floor] else null end),
         veth_bytes_per_step: ($veth / $steps),
         tern_cross_node_bytes_per_step: (($s | map(.bytes_inter_node) | add) / $steps),
         tern_intra_node_bytes_per_step: (($s | map(.bytes_intra_node) | add) / $steps),
         final_loss: ($s | last | .loss)}' <(grep '^{' "$DIR/$v.out")
  done
done

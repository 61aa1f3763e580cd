#!/usr/bin/env bash
# A stand-in for `tern rank` in control-plane tests. Accepts the rank launch contract
# (worker/agent/launch_contract.h), prints a few JSON step lines with decreasing loss and
# exits 0; reports its placement (Cpus_allowed_list, --cpus, --threads and the thread
# variables) as an event. Behaviour is picked by the job name in the spec file (so one cluster can run
# different fake jobs):
#   name contains "fail"        -> the last rank exits 3 after step 2
#   name contains "sleep"       -> every rank runs until killed (SIGTERM exits 143)
#   name contains "ignore-term" -> like sleep, but ignores SIGTERM (needs SIGKILL)
# With --control-stdin the sleeping ranks read orders (worker/engine/rank_control.h) from
# stdin: "stop" prints a "stopped" event and exits 75, like a rank that checkpointed.
# Steps = train_iters from the spec; FAKE_RANK_STEP_MS (default 100) per step.
set -u
[[ "${1:-}" == "rank" ]] || { echo "fake_rank: first argument must be 'rank'" >&2; exit 2; }
shift
spec="" rank="" world="" rpn="" rdv="" prefix="" threads="" json=0 token="" bind="" resume=0 cpus=""
control=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --spec-file) spec="$2"; shift 2 ;;
    --rank) rank="$2"; shift 2 ;;
    --world-size) world="$2"; shift 2 ;;
    --ranks-per-node) rpn="$2"; shift 2 ;;
    --rendezvous) rdv="$2"; shift 2 ;;
    --rendezvous-prefix) prefix="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --token-file) token="$2"; shift 2 ;;
    --cpus) cpus="$2"; shift 2 ;;
    --bind-address) bind="$2"; shift 2 ;;
    --resume-if-any) resume=1; shift ;;
    --json) json=1; shift ;;
    --control-stdin) control=1; shift ;;
    *) echo "fake_rank: unknown flag $1" >&2; exit 2 ;;
  esac
done
for v in spec rank world rpn rdv prefix threads; do
  [[ -n "${!v}" ]] || { echo "fake_rank: missing flag for $v" >&2; exit 2; }
done
[[ $json == 1 ]] || { echo "fake_rank: --json missing" >&2; exit 2; }
[[ -f "$spec" ]] || { echo "fake_rank: no spec file $spec" >&2; exit 2; }
job=${prefix%%/*} round=${prefix##*/}
[[ -n "$job" && "$round" =~ ^[0-9]+$ ]] || { echo "fake_rank: bad prefix $prefix" >&2; exit 2; }
ckpt=$(grep -o '"dir": *"[^"]*"' "$spec" | head -1 | sed 's/.*: *"\(.*\)"/\1/')

name=$(grep -o '"name": *"[^"]*"' "$spec" | head -1 | sed 's/.*: *"\(.*\)"/\1/')
iters=$(grep -o '"train_iters": *"\?[0-9]*' "$spec" | head -1 | grep -o '[0-9]*$')
iters=${iters:-5}
step_ms=${FAKE_RANK_STEP_MS:-100}
echo "fake rank $rank of $world (job $job round $round, $threads threads, ckpt $ckpt) pid $$"
echo "{\"type\":\"event\",\"kind\":\"rank_ready\",\"message\":\"rank $rank ready\"}"
# Like `tern rank`'s placement report: its mask (from /proc), the set it was given, threads.
mask=$(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' /proc/self/status)
echo "{\"type\":\"event\",\"kind\":\"placement\",\"message\":\"{\\\"rank\\\":$rank,\\\"cpus\\\":\\\"$mask\\\",\\\"bound\\\":\\\"$cpus\\\",\\\"threads\\\":$threads,\\\"omp\\\":\\\"${OMP_NUM_THREADS:-}\\\",\\\"blas\\\":\\\"${OPENBLAS_NUM_THREADS:-}\\\"}\"}"

if [[ "$name" == *ignore-term* ]]; then
  trap 'echo "fake rank $rank ignoring SIGTERM"' TERM
  while true; do sleep 0.1; done
fi
if [[ "$name" == *sleep* ]]; then
  trap 'echo "fake rank $rank got SIGTERM"; exit 143' TERM
  while true; do
    if [[ $control == 1 ]]; then
      order=""
      read -r -t 0.1 order
      rc=$?
      if [[ "$order" == *'"op":"stop"'* && "$order" == *"\"round\":$round"* ]]; then
        echo "{\"type\":\"event\",\"kind\":\"stopped\",\"message\":\"rank $rank stopped\"}"
        exit 75
      fi
      [[ $rc == 1 ]] && sleep 0.1  # EOF: no control channel
    else
      sleep 0.1
    fi
  done
fi
for ((i = 1; i <= iters; i++)); do
  sleep "$(printf '%d.%03d' $((step_ms / 1000)) $((step_ms % 1000)))"
  loss=$(printf '%d.%04d' $((50000 / (i + 9) / 10000)) $((50000 / (i + 9) % 10000)))
  echo "{\"type\":\"step\",\"step\":$i,\"total_steps\":$iters,\"loss\":$loss,\"lr\":0.001,\"tokens_per_s\":12345.5,\"step_ms\":$step_ms}"
  if [[ "$name" == *fail* && $i -ge 2 && $rank -eq $((world - 1)) ]]; then
    echo "fake rank $rank failing on purpose" >&2
    exit 3
  fi
done
echo "{\"type\":\"eval\",\"step\":$iters,\"val_loss\":2.5}"
echo "{\"type\":\"summary\",\"step\":$iters,\"steps\":$iters,\"final_loss\":$loss}"
echo "fake rank $rank done"
exit 0

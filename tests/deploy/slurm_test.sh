#!/usr/bin/env bash
# deploy/slurm/tern.sbatch under a real single-node Slurm (Debian's slurmctld, slurmd and
# munge, configured in a temporary directory on loopback ports):
#   1. the job trains; `scancel --signal=TERM` during it makes the ranks checkpoint at the
#      current step (the "stopped" event's step has a committed checkpoint that is not one the
#      interval would have written) and the script requeues the Slurm job;
#   2. the requeued run resumes the same Tern job from that step and it SUCCEEDS.
# Exits 77 (skipped) with one line where Slurm or munge is not installed or cannot run.
#
#   tests/deploy/slurm_test.sh BIN_DIR SOURCE_DIR
set -uo pipefail
BIN=$(realpath "${1:?bin dir}")
SRC=$(realpath "${2:?source dir}")
for t in slurmctld slurmd munged sbatch scontrol scancel squeue; do
  command -v "$t" >/dev/null || PATH=$PATH:/usr/sbin
  command -v "$t" >/dev/null || { echo "SKIP: $t not installed (Debian: slurmctld slurmd slurm-client munge)"; exit 77; }
done
[[ $(id -u) == 0 ]] || { echo "SKIP: slurmd needs root"; exit 77; }

T=$(mktemp -d /tmp/tern-slurm-XXXXXX)
chmod 755 "$T"
pids=()
cleanup() {
  [[ -n ${SLURM_CONF:-} ]] && scancel --full --signal=KILL "${jobid:-0}" 2>/dev/null
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  sleep 1
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
  pkill -KILL -f "$T/" 2>/dev/null  # ranks, workers, ternd of the job: everything under $T
  wait 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*"
  for f in "$T"/job.out "$T"/state/ternd.log "$T"/log/*.log; do
    [[ -f $f ]] && { echo "---- $f"; tail -40 "$f"; }
  done
  exit 1
}

# ---- munge and Slurm on loopback, everything under $T.
mkdir -p "$T/run" "$T/log" "$T/state-slurm" "$T/spool"
dd if=/dev/urandom of="$T/munge.key" bs=1024 count=1 2>/dev/null
chmod 600 "$T/munge.key"
munged -F --force --socket="$T/run/munge.sock" --key-file="$T/munge.key" \
  --log-file="$T/log/munged.log" --pid-file="$T/run/munged.pid" --seed-file="$T/run/munged.seed" \
  >"$T/log/munged.out" 2>&1 &
pids+=($!)
for _ in $(seq 50); do [[ -S $T/run/munge.sock ]] && break; sleep 0.1; done
[[ -S $T/run/munge.sock ]] || { echo "SKIP: munged cannot start: $(tail -2 "$T/log/munged.out")"; exit 77; }
port=$((20000 + RANDOM % 20000))
host=$(hostname)
cat >"$T/slurm.conf" <<CONF
ClusterName=terntest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
AuthType=auth/munge
AuthInfo=socket=$T/run/munge.sock
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$T/state-slurm
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/run/slurmctld.pid
SlurmdPidFile=$T/run/slurmd.pid
SlurmctldLogFile=$T/log/slurmctld.log
SlurmdLogFile=$T/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
KillWait=30
MinJobAge=600
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=tern Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$T/slurm.conf
slurmctld -D -f "$SLURM_CONF" >"$T/log/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -f "$SLURM_CONF" >"$T/log/slurmd.out" 2>&1 &
pids+=($!)
idle=0
for _ in $(seq 100); do
  sinfo -h -o %t 2>/dev/null | grep -q idle && { idle=1; break; }
  sleep 0.2
done
[[ $idle == 1 ]] || { echo "SKIP: Slurm did not come up: $(tail -2 "$T/log/slurmctld.out" "$T/log/slurmd.out")"; exit 77; }

# ---- the Tern job: small, long enough to be signalled while it trains.
for i in $(seq 400); do echo "the quick brown fox $i jumps over the lazy dog"; echo %; done \
  >"$T/corpus.txt"
"$BIN/tern" data prepare --tokenizer byte --input "$T/corpus.txt" \
  --output "$T/corpus" --doc-separator % >/dev/null || fail "data prepare"
cat >"$T/spec.json" <<SPEC
{"name": "slurm-test",
 "model": {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
           "num_attention_heads": 4, "max_position_embeddings": 64},
 "data": {"path": "$T/corpus", "seq_len": 64},
 "train_micro_batch_size_per_gpu": 4, "train_iters": 3000, "steps_per_print": 1,
 "eval_interval": 0,
 "scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": 5}},
 "checkpoint": {"interval": 1000, "keep_last": 3},
 "resources": {"threads_per_rank": 1}}
SPEC
jobid=$(cd "$T" && TERN_BIN=$BIN TERN_STATE=$T/state TERN_HEAD_ADDR=127.0.0.1 \
  sbatch --parsable --output="$T/job.out" "$SRC/deploy/slurm/tern.sbatch" "$T/spec.json") ||
  fail "sbatch"
echo "Slurm job $jobid"

# The newest "step" of the job output's step metrics (metric-step) or of an event kind's payload.
newest() {
  python3 - "$T/job.out" "$1" <<'PY'
import json, sys
val = ""
try:
    lines = open(sys.argv[1], errors="replace").read().splitlines()
except OSError:
    lines = []
for line in lines:
    try:
        j = json.loads(line)
    except ValueError:
        continue
    if not isinstance(j, dict):
        continue
    if sys.argv[2] == "metric-step":
        if j.get("type") == "metric" and j.get("kind") == "step":
            val = j["step"]
    elif j.get("type") == "event" and j.get("kind") == sys.argv[2]:
        try:
            val = json.loads(j["message"]).get("step", "")
        except (ValueError, AttributeError):
            pass
print(val)
PY
}
# The newest step metric, without starting python (polled often).
steps() {
  grep -o '"kind":"step"[^}]*' "$T/job.out" 2>/dev/null | tail -1 | grep -o '"step":[0-9]*' |
    head -1 | grep -o '[0-9]*'
}
for _ in $(seq 1200); do [[ $(steps) -ge 20 ]] 2>/dev/null && break; sleep 0.05; done
[[ $(steps) -ge 20 ]] 2>/dev/null || fail "the job did not reach step 20"
scancel --signal=TERM "$jobid" || fail "scancel --signal=TERM"
echo "scancel --signal=TERM at step $(steps)"

# The run stops: the ranks checkpoint, the workers drain, the script requeues the Slurm job.
requeued=0
for _ in $(seq 600); do
  grep -q "requeueing Slurm job" "$T/job.out" 2>/dev/null &&
    squeue -h -j "$jobid" -o %T 2>/dev/null | grep -q PENDING && { requeued=1; break; }
  sleep 0.1
done
[[ $requeued == 1 ]] || fail "the Slurm job was not requeued after the SIGTERM"
stopped=$(newest stopped)
[[ -n $stopped ]] || fail "no stopped event"
tjob=$(cat "$T/state/job-id")
ck=$(printf '%s/state/checkpoints/%s/step-%06d' "$T" "$tjob" "$stopped")
[[ -f $ck/manifest.json ]] || fail "no committed checkpoint at the stopped step $stopped ($ck)"
echo "stopped at step $stopped with a committed checkpoint $ck"

# Requeued jobs wait for a begin time; start it now.
scontrol update jobid="$jobid" StartTime=now >/dev/null || fail "scontrol update StartTime"
done_=0
for _ in $(seq 1800); do
  grep -q "Tern job $tjob \(SUCCEEDED\|FAILED\|CANCELLED\)" "$T/job.out" 2>/dev/null && { done_=1; break; }
  sleep 0.1
done
[[ $done_ == 1 ]] || fail "the requeued run did not finish"
grep -q "Tern job $tjob SUCCEEDED" "$T/job.out" || fail "the Tern job did not succeed"
resumed=$(newest resume)
[[ $resumed == "$stopped" ]] || fail "resumed from step '$resumed', not the stopped step $stopped"
grep -q "resuming Tern job $tjob" "$T/job.out" || fail "the second run did not pick up the job"
echo "PASS: stopped and checkpointed at step $stopped, requeued, resumed from it, SUCCEEDED"

#!/usr/bin/env bash
# compare_fio.sh DIR BYTES RANKS [PAIRS]
# Interleaves (A B A B ...) Tern's durable checkpoint write (tern-bench-ckpt: rank files
# fsynced + manifest committed) with fio's O_DIRECT io_uring sequential write of the same
# bytes split over the same number of jobs, and prints both medians and the ratio as JSON.
# Env: TERN_BENCH (path to tern-bench-ckpt), BS (default 1M), QD (default 8), SETTLE_S (2),
#      TERN_ARGS (extra flags for tern-bench-ckpt, e.g. --aligned).
set -euo pipefail
DIR=${1:?usage: compare_fio.sh DIR BYTES RANKS [PAIRS]}
BYTES=${2:?bytes}
RANKS=${3:?ranks}
PAIRS=${4:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
BENCH=${TERN_BENCH:-$HERE/../../../build/bin/tern-bench-ckpt}
BS=${BS:-1M}
QD=${QD:-8}
SETTLE_S=${SETTLE_S:-2}
BS_BYTES=$(numfmt --from=iec "$BS")
command -v fio >/dev/null || { echo "fio is not installed" >&2; exit 1; }
command -v jq >/dev/null || { echo "jq is not installed" >&2; exit 1; }
[[ -x $BENCH ]] || { echo "no tern-bench-ckpt at $BENCH (set TERN_BENCH)" >&2; exit 1; }
FIO_DIR="$DIR/fio-compare-$$"
trap 'rm -rf "$FIO_DIR"' EXIT

settle() { sync; sleep "$SETTLE_S"; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

tern=(); fio_bw=()
for ((i = 0; i < PAIRS; i++)); do
  settle
  t=$("$BENCH" --bytes "$BYTES" --ranks "$RANKS" --dir "$DIR" --reps 1 --read-reps 0 \
        --settle-s 0 --block-size "$BS_BYTES" --queue-depth "$QD" ${TERN_ARGS:-} |
      jq '.write_gibps_median')
  tern+=("$t")
  mkdir -p "$FIO_DIR"
  settle
  f=$(fio --name=w --directory="$FIO_DIR" --rw=write --bs="$BS" --iodepth="$QD" \
        --ioengine=io_uring --direct=1 --numjobs="$RANKS" --size=$((BYTES / RANKS)) \
        --fsync_on_close=1 --group_reporting --output-format=json |
      jq '.jobs[0].write.bw_bytes / 1073741824')
  fio_bw+=("$f")
  rm -rf "$FIO_DIR"
  echo "pair $((i + 1)): tern $t GiB/s, fio $f GiB/s" >&2
done
tm=$(printf '%s\n' "${tern[@]}" | median)
fm=$(printf '%s\n' "${fio_bw[@]}" | median)
ratio=$(awk -v a="$tm" -v b="$fm" 'BEGIN {printf "%.3f", a / b}')
echo "{\"bench\":\"ckpt_vs_fio\",\"bytes\":$BYTES,\"ranks\":$RANKS,\"pairs\":$PAIRS,\"bs\":\"$BS\",\"qd\":$QD,\"tern_gibps_median\":$tm,\"fio_gibps_median\":$fm,\"ratio\":$ratio,\"tern_gibps\":[$(IFS=,; echo "${tern[*]}")],\"fio_gibps\":[$(IFS=,; echo "${fio_bw[*]}")]}"

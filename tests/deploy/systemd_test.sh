#!/usr/bin/env bash
# deploy/systemd: `systemd-analyze verify` passes on both units with no message at all (it
# reports unknown keys and bad values as warnings and still exits 0, so any output fails), run
# in a scratch root that holds the binaries where the units expect them (/usr/local/bin, as
# `cmake --install` puts them) and the system's own units; the flags the units and tern.env
# pass exist in each binary's --help; the worker unit stops the way Tern's preemption path
# needs (SIGTERM to tern-worker alone, a stop timeout above the drain timeout).
#
#   tests/deploy/systemd_test.sh BIN_DIR SOURCE_DIR
set -uo pipefail
BIN=$(realpath "${1:?bin dir}")
SRC=$(realpath "${2:?source dir}")
command -v systemd-analyze >/dev/null || { echo "SKIP: systemd-analyze not installed (Debian: systemd)"; exit 77; }
units=/usr/lib/systemd/system
[[ -d $units ]] || units=/lib/systemd/system
[[ -f $units/sysinit.target ]] || { echo "SKIP: no system units under $units"; exit 77; }
R=$(mktemp -d /tmp/tern-systemd-XXXXXX)
trap 'rm -rf "$R"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

mkdir -p "$R/usr/local/bin" "$R/etc/systemd/system" "$R/usr/lib/systemd" "$R/etc/tern"
cp "$BIN/ternd" "$BIN/tern-worker" "$BIN/tern" "$R/usr/local/bin/"
cp -a "$units" "$R/usr/lib/systemd/system"
cp "$SRC"/deploy/systemd/*.service "$R/etc/systemd/system/"
cp "$SRC/deploy/systemd/tern.env" "$R/etc/tern/tern.env"
out=$(systemd-analyze verify --root="$R" ternd.service tern-worker.service 2>&1)
rc=$?
[[ $rc == 0 && -z $out ]] || fail "systemd-analyze verify (exit $rc): $out"

# Flags: the unit's ExecStart (continuation lines joined) and the env file's variables.
flags_of() {  # unit -> the --flags of its ExecStart
  sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$SRC/deploy/systemd/$1" | grep '^ExecStart=' |
    grep -o -- '--[a-z0-9-]*'
}
env_flags() {  # VAR -> its --flags in tern.env
  grep "^$1=" "$SRC/deploy/systemd/tern.env" | grep -o -- '--[a-z0-9-]*'
}
check_flags() {  # binary flags...
  local b=$1 help
  shift
  help=$("$BIN/$b" --help 2>&1)
  for f in "$@"; do
    grep -q -- "^ *$f\b" <<<"$help" || fail "$b has no flag $f"
  done
}
check_flags ternd $(flags_of ternd.service) $(env_flags TERND_ARGS)
check_flags tern-worker $(flags_of tern-worker.service) $(env_flags TERN_WORKER_ARGS)
[[ -n $(env_flags TERND_ARGS) && -n $(env_flags TERN_WORKER_ARGS) ]] || fail "tern.env defines no flags"

# The preemption path: SIGTERM to tern-worker only; the ranks must not be signalled directly
# before ternd has ordered their checkpoint, and systemd must wait longer than the drain.
w=$SRC/deploy/systemd/tern-worker.service
grep -q '^KillMode=mixed$' "$w" || fail "tern-worker.service: KillMode must be mixed"
stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s$/\1/p' "$w")
drain=$(grep '^TERN_WORKER_ARGS=' "$SRC/deploy/systemd/tern.env" | grep -o -- '--drain-timeout [0-9]*' | grep -o '[0-9]*$')
[[ -n $stop && -n $drain && $stop -gt $drain ]] ||
  fail "TimeoutStopSec ($stop s) must exceed tern-worker --drain-timeout ($drain s)"
for u in ternd tern-worker; do
  grep -q '^EnvironmentFile=/etc/tern/tern.env$' "$SRC/deploy/systemd/$u.service" || fail "$u.service does not read /etc/tern/tern.env"
  grep -q '^SystemCallFilter=' "$SRC/deploy/systemd/$u.service" && fail "$u.service filters system calls (io_uring would break)"
done
[[ $fails == 0 ]] || exit 1
echo "PASS: both units verify cleanly and name only flags the binaries accept"

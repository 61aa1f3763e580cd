#!/usr/bin/env bash
# On a GPU machine (an H200: nvcc, CMake, PyTorch; no Debian dev packages, no network): builds
# kernels/cuda with only the CUDA toolkit (kernels/cuda/standalone), checks every CUDA op against
# the CPU kernels on the same inputs, times a Llama-shaped fp32 training step through the CUDA
# operation table and the quantizers next to a device-to-device copy, runs PyTorch's equivalent
# as the peer, and ends with ONE JSON summary line. Every step has a time limit (60 + 200 + 60
# + 60 + 90 s at most: under 8 minutes even when each runs out).
#
#   deploy/gpu-check.sh [--arch 90] [--build-dir build-gpu] [bench flags, e.g. --layers 2]
#
# Exit status: 0 when every op check passed (and the benchmark ran), 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
arch=${TERN_CUDA_ARCHITECTURES:-90}
build=build-gpu
bench_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch=$2; shift 2 ;;
    --build-dir) build=$2; shift 2 ;;
    *) bench_args+=("$1"); shift ;;
  esac
done

die() {
  echo "gpu-check: error: $*" >&2
  printf '{"tool":"gpu-check","ok":false,"error":"%s"}\n' "$(echo "$*" | tr -d '"\\')"
  exit 1
}

# ---- Tools ---------------------------------------------------------------------------------
nvcc=${CUDACXX:-}
if [ -z "$nvcc" ]; then
  if command -v nvcc >/dev/null; then nvcc=$(command -v nvcc)
  elif [ -x /usr/local/cuda/bin/nvcc ]; then nvcc=/usr/local/cuda/bin/nvcc
  else die "nvcc not found (set CUDACXX or put the CUDA toolkit's bin/ on PATH)"; fi
fi
command -v cmake >/dev/null || die "cmake not found"
python=$(command -v python3 || command -v python || true)
[ -n "$python" ] || die "python3 not found (needed for the PyTorch peer and the summary)"
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
jobs=$(nproc 2>/dev/null || echo 4)
echo "gpu-check: nvcc $("$nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), $(cmake --version | head -1), sm_$arch, $jobs jobs"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi

logs=$build/gpu-check-logs
mkdir -p "$logs"

# ---- Build (the standalone project: toolkit + CMake only) ------------------------------------
if ! timeout 60 cmake -S kernels/cuda/standalone -B "$build" "${generator[@]}" \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER="$nvcc" \
    -DCMAKE_CUDA_ARCHITECTURES="$arch" >"$logs/configure.log" 2>&1; then
  tail -30 "$logs/configure.log" >&2
  die "configure failed (log: $logs/configure.log)"
fi
build_start=$(date +%s)
if ! timeout 200 cmake --build "$build" -j "$jobs" >"$logs/build.log" 2>&1; then
  tail -40 "$logs/build.log" >&2
  die "build failed (log: $logs/build.log)"
fi
build_s=$(( $(date +%s) - build_start ))
echo "gpu-check: built in ${build_s}s"

# ---- Runs: each keeps its own status; the summary reports what each produced ------------------
run() {  # run NAME TIMEOUT CMD...: output in $logs/NAME.log, status in $logs/NAME.rc
  local name=$1 limit=$2
  shift 2
  local rc=0
  timeout "$limit" "$@" >"$logs/$name.log" 2>&1 || rc=$?
  echo "$rc" >"$logs/$name.rc"
  if [ "$rc" -ne 0 ]; then
    echo "gpu-check: $name exited $rc$([ "$rc" -eq 124 ] && echo ' (timed out)'); last lines:" >&2
    tail -15 "$logs/$name.log" >&2
  fi
}
run check 60 "$build/tern-gpu-check"
grep -E '^[a-z_0-9]+ +(ok|FAIL)' "$logs/check.log" || true
run bench 60 "$build/tern-gpu-bench" "${bench_args[@]}"
run torch 90 "$python" kernels/cuda/standalone/torch_peer.py "${bench_args[@]}"

# ---- One JSON summary line -------------------------------------------------------------------
"$python" - "$logs" "$build_s" "$start" <<'PY'
import json, sys, time
logs, build_s, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def last_json(name):
    rc = int(open(f"{logs}/{name}.rc").read().strip() or 1)
    obj = None
    for line in open(f"{logs}/{name}.log", errors="replace"):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                pass
    return rc, obj

s = {"tool": "gpu-check", "build_s": build_s}
rc_c, check = last_json("check")
rc_b, bench = last_json("bench")
rc_t, torch = last_json("torch")
s["check_rc"], s["bench_rc"], s["torch_rc"] = rc_c, rc_b, rc_t
if check:
    for k in ("device", "sm", "ops_checked", "ops_failed", "worst_err", "failures", "quant"):
        if k in check:
            s[k] = check[k]
    if "error" in check:
        s["check_error"] = check["error"]
if bench:
    s["tern_step"] = {k: bench[k] for k in bench if k != "tool"}
if torch:
    s["torch_step"] = {k: torch[k] for k in torch if k != "tool"}
if bench and torch and "step_ms" in bench and "step_ms" in torch:
    s["tern_vs_torch_step_speed"] = round(torch["step_ms"] / bench["step_ms"], 3)
s["ok"] = bool(rc_c == 0 and check and check.get("ops_failed") == 0 and rc_b == 0)
s["elapsed_s"] = int(time.time()) - start
print(json.dumps(s, separators=(",", ":")))
sys.exit(0 if s["ok"] else 1)
PY

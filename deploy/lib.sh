# Shared helpers for the deploy scripts (sourced, not run).
TERN_PACKAGES=(build-essential cmake pkg-config git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libgloo-dev liburing-dev libopenblas-dev libopenblas0-openmp libspdlog-dev libabsl-dev
  nlohmann-json3-dev libgtest-dev libgmock-dev googletest libbenchmark-dev libsqlite3-dev
  libcpp-httplib-dev libcli11-dev fortunes fortunes-min iproute2 procps
  libjs-chart.js chromium chromium-driver clang-format
  systemd slurmctld slurmd slurm-client munge python3-yaml)

tern_sudo() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs the packages in TERN_PACKAGES (plus any given) that are not installed yet.
tern_install_deps() {
  local missing=()
  for p in "${TERN_PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    tern_sudo apt-get -o DPkg::Lock::Timeout=900 update -qq
    tern_sudo apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

tern_jobs() { nproc 2>/dev/null || echo 2; }

# The build folder of a CMake preset: build/ for release, build-<preset>/ for the others
# (as CMakePresets.json says).
tern_build_dir() {
  local preset=${1:-release}
  if [ "$preset" = release ]; then echo build; else echo "build-$preset"; fi
}

# Configures and builds a preset (default release, into build/; ci builds into build-ci/ with
# warnings as errors).
tern_build() {
  local preset=${1:-release}
  cmake --preset "$preset" >/dev/null
  cmake --build "$(tern_build_dir "$preset")" -j "$(tern_jobs)"
}

# clang-format 14 (the version the tree is formatted with; Debian bookworm's clang-format).
tern_clang_format() {
  if command -v clang-format-14 >/dev/null; then echo clang-format-14; else echo clang-format; fi
}

# Fails, listing them, if any tracked C++/CUDA source is not formatted as .clang-format says.
tern_check_format() {
  local cf
  cf=$(tern_clang_format)
  if ! "$cf" --version | grep -q "version 14\."; then
    echo "warning: $("$cf" --version) is not clang-format 14; its output may differ" >&2
  fi
  local files bad=()
  mapfile -t files < <(git ls-files '*.cc' '*.h' '*.cu')
  if [ ${#files[@]} -eq 0 ]; then
    echo "error: no tracked C++ files to check (not a git checkout?)" >&2
    return 1
  fi
  if "$cf" --dry-run -Werror "${files[@]}" >/dev/null 2>&1; then
    echo "format: ${#files[@]} tracked C++ files are clang-formatted"
    return 0
  fi
  for f in "${files[@]}"; do  # one at a time, to name each unformatted file
    "$cf" --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
  done
  if [ ${#bad[@]} -gt 0 ]; then
    echo "error: ${#bad[@]} of ${#files[@]} tracked C++ files are not clang-formatted:" >&2
    printf '  %s\n' "${bad[@]}" >&2
    echo "--> hint: $cf -i ${bad[*]}" >&2
    return 1
  fi
  echo "format: ${#files[@]} tracked C++ files are clang-formatted"
}

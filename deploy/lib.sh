# Shared helpers for the deploy scripts (sourced, not run).
TERN_PACKAGES=(build-essential cmake pkg-config git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libgloo-dev liburing-dev libopenblas-dev libopenblas0-openmp libspdlog-dev libabsl-dev
  nlohmann-json3-dev libgtest-dev libgmock-dev googletest libbenchmark-dev libsqlite3-dev
  libcpp-httplib-dev libcli11-dev fortunes fortunes-min iproute2 procps
  libjs-chart.js chromium chromium-driver)

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

# Configures and builds the release preset into build/.
tern_build() {
  cmake --preset release >/dev/null
  cmake --build build -j "$(tern_jobs)"
}

#!/usr/bin/env bash
# Installs what Tern needs from Debian's packages (idempotent, quiet when present),
# configures the release preset, builds and runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/lib.sh
tern_install_deps
tern_build
cd build
ctest --output-on-failure -j "$(tern_jobs)" --timeout 600 "$@"

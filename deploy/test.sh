#!/usr/bin/env bash
# Installs what Tern needs from Debian's packages (idempotent, quiet when present),
# configures a preset, builds and runs the test suite. Arguments go to ctest.
#
# CI mode (CI=true, as CI runners set it, or --ci first): fails first if any tracked
# *.cc/*.h/*.cu file is not clang-formatted, then builds the `ci` preset (Release, warnings
# are errors) into build-ci/. Otherwise the `release` preset into build/.
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/lib.sh
preset=release
if [ "${1:-}" = --ci ]; then
  preset=ci
  shift
elif [ "${CI:-}" = true ]; then
  preset=ci
fi
tern_install_deps
if [ "$preset" = ci ]; then tern_check_format; fi
tern_build "$preset"
cd "$(tern_build_dir "$preset")"
ctest --output-on-failure -j "$(tern_jobs)" --timeout 600 "$@"

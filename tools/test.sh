#!/usr/bin/env bash
# Runs every test: installs what is missing, builds, runs ctest (unit, integration, e2e).
# Exits non-zero on any failure. Usage: tools/test.sh [extra ctest args, e.g. -L unit]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${CONTINUUM_BUILD_DIR:-$root/build}"
source "$root/tools/dev/deps.sh"

phase() { echo "== $1: $2 s"; }
t0=$SECONDS
continuum_install_deps
continuum_install_npm_tools "$root"
phase "dependencies" $((SECONDS - t0))

t0=$SECONDS
continuum_configure_and_build "$root" "$build"
phase "build" $((SECONDS - t0))

t0=$SECONDS
cd "$build"
set +e
ctest -j"$(nproc)" --output-on-failure --timeout 600 "$@"
rc=$?
set -e
phase "tests" $((SECONDS - t0))
exit $rc

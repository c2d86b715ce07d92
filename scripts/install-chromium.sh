#!/usr/bin/env bash
# Installs headless Chromium from Debian's packages when it is missing and
# prints the binary's path. The status page's browser test (tests/tests/ui.rs)
# looks at $MERIDIAN_CHROMIUM and fails, never skips, when it is missing.
set -euo pipefail
find_bin() { command -v chromium || command -v chromium-browser || true; }
bin=$(find_bin)
if [ -z "$bin" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends chromium >&2
  bin=$(find_bin)
fi
"$bin" --version >/dev/null
echo "$bin"

#!/usr/bin/env bash
# docs/BENCHMARKS.md "Store writes: meridian vs etcd 3.4, alternating
# rounds": installs Debian's etcd 3.4 if missing, builds the release
# binaries, and runs `meridian-bench compare` (each round starts a fresh
# 3-node meridian cluster and a fresh 3-member etcd cluster on loopback, the
# order alternating; the report is the median over rounds). Extra arguments
# go to `meridian-bench compare`, e.g.
#   scripts/bench-compare.sh --rounds 3 --clients 1,16,64 --duration 10s
# DATA_ROOT: where both systems keep their data (default: the temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v etcd >/dev/null; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y etcd-server etcd-client
fi
echo "etcd: $(etcd --version | head -1)" >&2
cargo build --locked --release -p meridian -p meridian-bench
args=()
if [ -n "${DATA_ROOT:-}" ]; then args+=(--data-root "$DATA_ROOT"); fi
exec target/release/meridian-bench compare "${args[@]}" "$@"

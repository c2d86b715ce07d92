#!/usr/bin/env bash
# etcd side of docs/BENCHMARKS.md "Store writes: meridian vs etcd 3.4":
# installs Debian's etcd 3.4 if missing, starts a 3-member etcd cluster on
# loopback (fsync on, etcd's default) in a temp dir, and runs the same write
# load as `meridian-bench store` through `meridian-bench etcd` (KV.Put over
# gRPC, one connection per client). Extra arguments go to `meridian-bench
# etcd`, e.g. `scripts/bench-etcd.sh --clients 1,16,64 --duration 10s -o json`.
# BASE_PORT (default 22379): member i listens for clients on BASE_PORT+10*i
# and for peers on BASE_PORT+10*i+1. DATA_ROOT: where the temp dir goes.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y etcd-server etcd-client
fi
echo "etcd: $(etcd --version | head -1)" >&2

BENCH="${MERIDIAN_BENCH:-target/release/meridian-bench}"
if [ ! -x "$BENCH" ]; then
  cargo build --release -p meridian-bench
fi

base="${BASE_PORT:-22379}"
dir="$(mktemp -d "${DATA_ROOT:-${TMPDIR:-/tmp}}/etcd-bench-XXXXXX")"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM

initial=""
endpoints=""
for i in 1 2 3; do
  initial+="${initial:+,}m$i=http://127.0.0.1:$((base + 10 * i + 1))"
  endpoints+="${endpoints:+,}127.0.0.1:$((base + 10 * i))"
done

for i in 1 2 3; do
  c=$((base + 10 * i)); p=$((c + 1))
  # The systemd unit the package installs is not used: it would be a single
  # member on the default ports.
  etcd --name "m$i" --data-dir "$dir/m$i" \
    --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
    --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
    --initial-cluster "$initial" --initial-cluster-state new --initial-cluster-token etcd-bench \
    --logger zap --log-level warn >"$dir/m$i.log" 2>&1 &
  pids+=("$!")
done

healthy=no
for _ in $(seq 1 100); do
  if ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health >/dev/null 2>&1; then
    healthy=yes
    break
  fi
  sleep 0.2
done
if [ "$healthy" != yes ]; then
  echo "etcd cluster not healthy after 20s; logs:" >&2
  tail -n 20 "$dir"/m*.log >&2
  exit 1
fi
ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint status -w table >&2

"$BENCH" etcd --endpoints "$endpoints" "$@"

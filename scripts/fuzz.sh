#!/usr/bin/env bash
# Runs every fuzz target (crates/meridian-fuzz, cargo-fuzz / libFuzzer) for
# FUZZ_SECONDS each (default 30), starting from the seeds in the repo, and
# prints each target's corpus size. A crash fails the run and leaves the
# input under crates/meridian-fuzz/artifacts/TARGET/ to turn into a test.
#
#   scripts/fuzz.sh                    # every target, 30 s each (CI)
#   FUZZ_SECONDS=3600 scripts/fuzz.sh peer_wire   # one target for an hour
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${FUZZ_SECONDS:-30}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(peer_wire store_codec model_parse xds_requests agent_stream)
if ! command -v cargo-fuzz >/dev/null; then
  cargo install --locked cargo-fuzz@0.13.2
fi
# cargo-fuzz passes the sanitizer and coverage flags as -Z options; the
# stable toolchain accepts them under RUSTC_BOOTSTRAP, so no nightly is needed.
export RUSTC_BOOTSTRAP=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "$work/$t"
  cp crates/meridian-fuzz/seeds/"$t"/* "$work/$t"/ 2>/dev/null || true
  echo "fuzz: $t for ${secs}s"
  status=0
  cargo fuzz run --fuzz-dir crates/meridian-fuzz "$t" "$work/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 >"$work/$t.log" 2>&1 || status=$?
  grep -E 'Done [0-9]+ runs|ERROR|panicked|SUMMARY|crash-|Test unit written' "$work/$t.log" || tail -20 "$work/$t.log"
  echo "fuzz: $t corpus $(ls "$work/$t" | wc -l) inputs, exit $status"
  [ "$status" -eq 0 ] || exit "$status"
done

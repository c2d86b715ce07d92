#!/usr/bin/env bash
# Builds the meridian image (tag meridian:latest, or $IMAGE) from
# deploy/docker/Dockerfile, and meridian-envoy:latest (Dockerfile.envoy, the
# Envoy of scripts/install-envoy.sh) for the compose demo, with nothing
# pulled when given --local-base.
#   build.sh [--local-base] [--bin PATH]
# --local-base: first make the Dockerfile's base tag, debian:bookworm-slim,
#   locally: a minimal Debian 12 root filesystem from debootstrap
#   (--variant=minbase, over Debian's packages; apt installs debootstrap if
#   missing), trimmed of apt caches, docs and locales, then `docker import`.
#   Skipped when an image of that tag exists already. Takes about 2 minutes
#   here (docs/BENCHMARKS.md, "Images").
# --bin PATH: the binary to package (default target/release/meridian, built
#   if missing); it is stripped into the build context.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
base=debian:bookworm-slim
image=${IMAGE:-meridian:latest}
bin=$root/target/release/meridian
local_base=false
while [ $# -gt 0 ]; do
  case $1 in
    --local-base) local_base=true ;;
    --bin) bin=$2; shift ;;
    *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
if $local_base && ! docker image inspect "$base" >/dev/null 2>&1; then
  start=$(date +%s)
  command -v debootstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap; }
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase bookworm "$rootfs" >"$rootfs.log" 2>&1 || { tail -20 "$rootfs.log" >&2; exit 1; }
  rm -f "$rootfs.log"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc "$rootfs"/usr/share/man "$rootfs"/usr/share/info "$rootfs"/usr/share/locale
  tar -C "$rootfs" -c . | docker import - "$base" >/dev/null
  echo "build.sh: made $base locally in $(( $(date +%s) - start ))s ($(docker image inspect -f '{{.Size}}' "$base" | awk '{printf "%d MB", $1/1e6}'))"
fi
if [ ! -x "$bin" ]; then
  (cd "$root" && cargo build --locked --release -p meridian)
fi
ctx=$(mktemp -d)
ectx=$(mktemp -d)
trap 'rm -rf "$ctx" "$ectx" ${rootfs:+"$rootfs"}' EXIT
strip -o "$ctx/meridian" "$bin"
start=$(date +%s)
docker build --quiet -f "$root/deploy/docker/Dockerfile" -t "$image" "$ctx" >/dev/null
echo "build.sh: $image built in $(( $(date +%s) - start ))s ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%d MB", $1/1e6}'))"
cp "${MERIDIAN_ENVOY:-$("$root/scripts/install-envoy.sh")}" "$ectx/envoy"
start=$(date +%s)
docker build --quiet -f "$root/deploy/docker/Dockerfile.envoy" -t meridian-envoy:latest "$ectx" >/dev/null
echo "build.sh: meridian-envoy:latest built in $(( $(date +%s) - start ))s ($(docker image inspect -f '{{.Size}}' meridian-envoy:latest | awk '{printf "%d MB", $1/1e6}'))"

#!/usr/bin/env bash
# Starts the image the way the Kubernetes manifests run it (read-only root
# filesystem, uid 65532, every capability dropped, no new privileges, no
# network but loopback) as `meridian dev`, and waits for Docker's health
# check, which is /readyz, to say healthy.
#   smoke.sh [IMAGE]             must turn healthy within 90 s
#   smoke.sh --self-test [IMAGE] the health check pointed at a port nothing
#                                listens on must NOT turn healthy
set -euo pipefail
expect=healthy
env=()
if [ "${1:-}" = --self-test ]; then
  expect=unhealthy
  env=(-e MERIDIAN_ADMIN_PORT=7499)
  shift
fi
image=${1:-meridian:latest}
cid=$(docker run -d --network none --read-only --tmpfs /tmp:uid=65532,gid=65532 \
  --cap-drop ALL --security-opt no-new-privileges "${env[@]}" "$image" dev --data-dir /tmp/data)
trap 'docker rm -f "$cid" >/dev/null' EXIT
status=starting
for _ in $(seq 1 45); do
  status=$(docker inspect -f '{{.State.Health.Status}}' "$cid")
  [ "$status" = healthy ] || [ "$status" = unhealthy ] && break
  sleep 2
done
uid=$(docker exec "$cid" id -u)
if [ "$status" != "$expect" ]; then
  echo "FAIL image $image: health $status, expected $expect"; docker logs "$cid" 2>&1 | tail -20; exit 1
fi
if [ "$uid" = 0 ]; then
  echo "FAIL image $image runs as root"; exit 1
fi
echo "image $image: $status as expected (uid $uid, read-only root filesystem)"

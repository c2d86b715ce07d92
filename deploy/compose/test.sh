#!/usr/bin/env bash
# The compose demo end to end (CI runs it from scripts/check-deploy.sh):
# up from the images of deploy/docker/build.sh (mutual TLS between
# controllers, agents, Envoys and the CLI), traffic through each
# region's Envoy, us-east cut off from the other regions with `docker network
# disconnect`, the other two keep serving and still commit writes, us-east
# reconnected catches up and its Envoy converges; then everything is torn
# down. Prints the time of each phase.
#   test.sh BIN       BIN: a meridian binary on this host, for the CLI
# COMPOSE: the Compose to run (default docker-compose, Debian's 1.29; CI
# also runs it with v2 from scripts/install-compose-v2.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$1
project=meridian
compose=${COMPOSE:-docker-compose}
dc() { "$compose" -f "$here/docker-compose.yml" -p "$project" "$@"; }
east=127.0.0.1:17400 west=127.0.0.1:17410
t0=$(date +%s)
phase() { echo "compose: $1 at $(( $(date +%s) - t0 ))s"; }
echo "compose: $("$compose" version 2>/dev/null | head -1)"
# The logs of a container stuck restarting too: the only trace of why.
fail() { echo "FAIL compose: $*"; dc ps || true; for c in us-east-1 init agent-us-east envoy-us-east $(docker ps -a --filter status=restarting --format '{{.Names}}' 2>/dev/null); do echo "--- $c"; docker logs --tail 20 "$c" 2>&1 || true; done; exit 1; }
# Retries CMD until it succeeds or SECONDS pass (generous: CI is 2 slow cores).
until_ok() { local s=$1; shift; local end=$(( $(date +%s) + s )); until "$@" >/dev/null 2>&1; do [ "$(date +%s)" -lt "$end" ] || return 1; sleep 2; done; }
body() { [ "$(curl -s -m 5 "127.0.0.1:$1/")" = "hello from $2" ]; }
synced() { "$bin" --server "$1" proxy-status 2>/dev/null | awk -v n="$2" '$1 == n' | grep -q "SYNCED.*SYNCED.*SYNCED.*SYNCED"; }
caught_up() {
  # Every voter Ready with the leader's applied index.
  "$bin" --server "$1" cluster status 2>/dev/null | awk 'NR > 2 && $2 != "" { n++; if ($4 == "yes") r++; a[$8]++ } END { exit !(n == 9 && r == 9 && length(a) == 1) }'
}
# Docker here (fuse-overlayfs) sometimes holds a network's endpoints for a
# few seconds after its containers are gone, so `down` is followed by
# retries of the networks' removal. One that stays is reused by the next
# `up` of the same project (and only of it: a new name would clash on the
# subnets), so it is reported, not failed on.
teardown() {
  # runbooks.sh's containers and volumes first: they hold the networks.
  docker ps -aq --filter label=meridian.compose-runbook=1 | xargs -r docker rm -f >/dev/null 2>&1 || true
  docker volume ls -q --filter label=meridian.compose-runbook=1 | xargs -r docker volume rm >/dev/null 2>&1 || true
  dc down -v --remove-orphans >/dev/null 2>&1 || true
  local end=$(( $(date +%s) + ${1:-30} )) left
  while left=$(docker network ls -q --filter "label=com.docker.compose.project=$project") && [ -n "$left" ]; do
    # shellcheck disable=SC2086
    docker network rm $left >/dev/null 2>&1 || true
    [ "$(date +%s)" -lt "$end" ] || { echo "compose: note: docker kept network(s) $(docker network ls --filter "label=com.docker.compose.project=$project" --format '{{.Name}}' | tr '\n' ' ')"; break; }
    sleep 3
  done
}
tmp=$(mktemp -d)
trap 'teardown; rm -rf "$tmp"' EXIT
teardown 0
dc up -d >/dev/null 2>&1 || fail "docker-compose up"
# Every listener is mutual TLS: the host's CLI uses the admin operator's
# certificate that `setup` made (as README shows).
for f in ca.pem operator-compose-admin.pem operator-compose-admin-key.pem; do
  docker cp "meridian-setup:/etc/meridian/tls/$f" "$tmp/$f" >/dev/null || fail "copying $f out of the certs volume"
done
export MERIDIAN_CA="$tmp/ca.pem" MERIDIAN_CERT="$tmp/operator-compose-admin.pem" MERIDIAN_KEY="$tmp/operator-compose-admin-key.pem"
until_ok 240 caught_up "$east" || fail "nine ready voters"
phase "9 voters ready"
# The API is up and takes mutual TLS only: a client without a certificate
# gets nothing.
if env -u MERIDIAN_CA -u MERIDIAN_CERT -u MERIDIAN_KEY "$bin" --timeout 5s --server "$east" get service >/dev/null 2>&1; then
  fail "the API answered a client without a certificate"
fi
for rp in us-east:18001 eu-west:18002 ap-south:18003; do
  until_ok 120 body "${rp#*:}" "${rp%:*}" || fail "no traffic through envoy-${rp%:*}"
done
phase "traffic through every region's Envoy"
# Each Envoy checks its controllers on /readyz (setup.sh's
# --controller-admin-port), and all three pass: a check that could not
# reach the admin port would leave them unhealthy (Envoy's panic mode
# would still connect, hiding it). Envoy's admin is on the container's
# loopback: read from inside its network namespace.
envoy_admin() { nsenter -t "$(docker inspect -f '{{.State.Pid}}' envoy-us-east)" -n curl -s -m 5 "127.0.0.1:9901$1"; }
xds_healthy() { [ "$(envoy_admin /clusters | grep -c '^meridian_xds::.*::health_flags::healthy$')" -eq 3 ]; }
envoy_admin /config_dump | grep -q '"path": "/readyz"' || fail "envoy-us-east's bootstrap has no /readyz check of its controllers"
until_ok 60 xds_healthy || fail "envoy-us-east's controllers are not all healthy by /readyz: $(envoy_admin /clusters | grep '^meridian_xds::.*health_flags')"

# Priority failover: us-east's upstream stops, its agent reports it
# unhealthy, and us-east's Envoy sends its traffic to eu-west (us-east's
# first failover region); back when it returns.
docker stop -t 5 upstream-us-east >/dev/null
until_ok 120 body 18001 eu-west || fail "us-east's Envoy did not fail over to eu-west"
phase "us-east's upstream down: its Envoy serves from eu-west"
docker start upstream-us-east >/dev/null
until_ok 120 body 18001 us-east || fail "us-east's Envoy did not come back to us-east"
phase "us-east's upstream back: its Envoy serves from us-east again"

for i in 1 2 3; do docker network disconnect "${project}_interregion" "us-east-$i"; done
phase "us-east cut off"
cat > "$tmp/write.yaml" <<'YAML'
kind: service
name: during-partition
spec:
  port: 8080
YAML
# The leader may have been in us-east: retried until the others elect one.
until_ok 120 "$bin" --server "$west" apply -f "$tmp/write.yaml" || fail "a write with us-east cut off"
# Cut off for real: us-east cannot have it (it is not committed there, and a
# read forwarded to the new leader cannot get through).
if "$bin" --timeout 5s --server "$east" get service during-partition >/dev/null 2>&1; then
  fail "us-east read the write made while it was cut off: the partition did not hold"
fi
until_ok 60 body 18002 eu-west || fail "eu-west stopped serving"
until_ok 60 body 18003 ap-south || fail "ap-south stopped serving"
# us-east's Envoy keeps the config it has.
until_ok 60 body 18001 us-east || fail "us-east's Envoy stopped serving"
phase "eu-west and ap-south serve and commit; us-east's Envoy serves its last config"

for i in 1 2 3; do docker network connect --ip "10.90.0.1$i" "${project}_interregion" "us-east-$i"; done
until_ok 240 caught_up "$west" || fail "us-east caught up"
until_ok 120 bash -c "'$bin' --server '$east' get service during-partition" || fail "us-east has the write made while it was cut off"
until_ok 120 synced "$west" envoy-us-east || fail "envoy-us-east converged"
phase "us-east reconnected, caught up, its Envoy synced"

# Rolling restart of all nine under traffic, one controller at a time, each
# step gated on `cluster status` (nine Ready voters, one applied index).
# Envoys keep serving from their config meanwhile, so no request may fail;
# writes go on through both published APIs, and every acknowledged one must
# be there at the end (a failed one's outcome is unknown: not checked).
traffic() {
  local n=0
  while [ ! -f "$tmp/stop" ] && [ $n -lt 5000 ]; do
    for p in 18001 18002 18003; do
      curl -s -m 5 -o /dev/null -w '%{http_code}\n' "127.0.0.1:$p/" >> "$tmp/codes" || echo "000" >> "$tmp/codes"
    done
    n=$((n + 1)); sleep 0.2
  done
}
writes() {
  local k=0
  while [ ! -f "$tmp/stop" ] && [ $k -lt 2000 ]; do
    k=$((k + 1))
    printf 'kind: service\nname: rolling-%s\nspec:\n  port: 8080\n' "$k" > "$tmp/w.yaml"
    if "$bin" --timeout 10s --server "$east,$west" apply -f "$tmp/w.yaml" >/dev/null 2>&1; then echo "rolling-$k" >> "$tmp/acked"; fi
    sleep 0.3
  done
}
: > "$tmp/codes"; : > "$tmp/acked"
traffic & tpid=$!
writes & wpid=$!
for r in us-east eu-west ap-south; do
  for i in 1 2 3; do
    docker restart -t 20 "$r-$i" >/dev/null
    until_ok 240 caught_up "$west" || until_ok 60 caught_up "$east" || { touch "$tmp/stop"; fail "cluster not whole again after restarting $r-$i"; }
  done
done
touch "$tmp/stop"; wait "$tpid" "$wpid"
bad=$(grep -vc '^200$' "$tmp/codes" || true)
total=$(wc -l < "$tmp/codes")
[ "$bad" -eq 0 ] || fail "$bad of $total requests through the Envoys failed during the rolling restart"
acked=$(wc -l < "$tmp/acked")
[ "$acked" -gt 0 ] || fail "no write was acknowledged during the rolling restart"
have=$("$bin" --server "$east,$west" get service -o json | grep -o '"rolling-[0-9]*"' | tr -d '"' | sort -u)
lost=$(sort -u "$tmp/acked" | comm -23 - <(echo "$have"))
[ -z "$lost" ] || fail "acknowledged writes lost: $lost"
phase "rolling restart of 9: $total requests, 0 failed; $acked writes acknowledged, none lost"
# docs/OPERATIONS.md's runbooks on this deployment: backup and restore, a
# lost disk, a region removed and added back.
# shellcheck source=deploy/compose/runbooks.sh
source "$here/runbooks.sh"
teardown
trap - EXIT
rm -rf "$tmp"
phase "torn down; total"

#!/usr/bin/env bash
# docs/OPERATIONS.md's runbooks, exercised on the running compose
# deployment with the deployed images (test.sh sources this after its
# rolling restart; it can also run on its own against a deployment that
# `docker-compose up` started):
#   1. backup and restore: `snapshot save` inside a controller, restored into
#      a new cluster started from the same image; the config is identical;
#   2. a controller whose disk is gone: its id removed, a new id on a fresh
#      volume under the same name and address, the cluster whole again;
#   3. removing a region (ap-south's three ids, one at a time) while the
#      others keep serving and committing, then adding it back under new
#      ids; its Envoy converges on the new controllers.
#   runbooks.sh BIN     BIN: a meridian binary on this host, for the CLI
# The runbooks' own containers stay, as part of the deployment, until
# test.sh's teardown (or `rb_cleanup`).
set -euo pipefail

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  # On its own: the helpers test.sh would have defined.
  here=$(cd "$(dirname "$0")" && pwd)
  bin=$1
  project=meridian
  east=127.0.0.1:17400 west=127.0.0.1:17410
  t0=$(date +%s)
  phase() { echo "compose: $1 at $(( $(date +%s) - t0 ))s"; }
  fail() { echo "FAIL compose: $*"; exit 1; }
  until_ok() { local s=$1; shift; local end=$(( $(date +%s) + s )); until "$@" >/dev/null 2>&1; do [ "$(date +%s)" -lt "$end" ] || return 1; sleep 2; done; }
  body() { [ "$(curl -s -m 5 "127.0.0.1:$1/")" = "hello from $2" ]; }
  synced() { "$bin" --server "$1" proxy-status 2>/dev/null | awk -v n="$2" '$1 == n' | grep -q "SYNCED.*SYNCED.*SYNCED.*SYNCED"; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  for f in ca.pem operator-compose-admin.pem operator-compose-admin-key.pem; do
    docker cp "meridian-setup:/etc/meridian/tls/$f" "$tmp/$f" >/dev/null
  done
  export MERIDIAN_CA="$tmp/ca.pem" MERIDIAN_CERT="$tmp/operator-compose-admin.pem" MERIDIAN_KEY="$tmp/operator-compose-admin-key.pem"
fi

image=meridian:latest
tls=/etc/meridian/tls
# Containers and volumes the runbooks make outside compose carry this label
# (compose's `down` knows only its own; test.sh's teardown removes these).
label=meridian.compose-runbook=1
rb_cleanup() {
  docker ps -aq --filter "label=$label" | xargs -r docker rm -f >/dev/null 2>&1 || true
  docker volume ls -q --filter "label=$label" | xargs -r docker volume rm >/dev/null 2>&1 || true
}
rb_cleanup

# N voters, all Ready, at one applied index (as test.sh's caught_up, for
# any N).
voters_ready() {
  "$bin" --server "$1" cluster status 2>/dev/null | awk -v want="$2" 'NR > 2 && $2 != "" { n++; if ($4 == "yes") r++; a[$8]++ } END { exit !(n == want && r == want && length(a) == 1) }'
}
# The admin operator's CLI inside a container of the image.
in_cli() { local c=$1; shift; docker exec "$c" meridian --ca "$tls/ca.pem" --cert "$tls/operator-compose-admin.pem" --key "$tls/operator-compose-admin-key.pem" "$@"; }
# A node certificate for ID made with the deployment's CA, in its volume.
node_cert() {
  docker run --rm --user 65532:65532 --network none -v "${project}_certs:$tls" "$image" \
    certs node --dir "$tls" --id "$1" --host "$2" --host "$3" >/dev/null
}
# A controller run from the image outside compose: NAME ID REGION IP,
# joining through its region's peers, reachable under its region's name
# `REGION-K` (ALIAS) so the Envoy bootstraps and --join lists still hold.
controller() {
  local name=$1 id=$2 region=$3 ip=$4 alias=$5 join=$6
  docker volume create --label "$label" "${project}_$name" >/dev/null
  docker run -d --name "$name" --label "$label" --hostname "$alias" --restart unless-stopped \
    --read-only --user 65532:65532 --cap-drop ALL --security-opt no-new-privileges \
    --tmpfs /tmp:uid=65532,gid=65532 \
    -v "${project}_$name:/var/lib/meridian" -v "${project}_certs:$tls:ro" \
    --network "${project}_interregion" --ip "$ip" --network-alias "$alias" \
    "$image" server --node-id="$id" --region="$region" --data-dir=/var/lib/meridian \
    --api-listen=0.0.0.0:7400 --peer-listen=0.0.0.0:7401 --xds-listen=0.0.0.0:7402 \
    --admin-listen=0.0.0.0:7403 --advertise-host="$ip" --join="$join" --raft-profile=wan \
    --tls-cert="$tls/node-$id.pem" --tls-key="$tls/node-$id-key.pem" --tls-ca="$tls/ca.pem" >/dev/null
  docker network connect --alias "$alias" "${project}_$region" "$name"
}
# The specs of every config kind, by kind and name, without store metadata,
# read with the CLI command given (its `get KIND -o json`).
config_of() {
  local k
  for k in region secret service cluster route listener; do
    echo "== $k"
    "$@" get "$k" -o json 2>/dev/null | python3 -c '
import json, sys
for o in sorted(json.load(sys.stdin).get("items", []), key=lambda o: o["name"]):
    print(o["name"], json.dumps(o.get("spec"), sort_keys=True))
'
  done
}

# 1. Backup and restore with the deployed images.
in_cli us-east-1 --server us-east-1:7400 snapshot save /tmp/backup.snap >/dev/null \
  || fail "snapshot save inside us-east-1"
docker exec us-east-1 cat /tmp/backup.snap > "$tmp/backup.snap"
"$bin" snapshot inspect "$tmp/backup.snap" > "$tmp/inspect" || fail "snapshot inspect"
# A new one-node cluster from the same image, on its own (no network).
docker run -d --name meridian-restore --label "$label" --read-only --user 65532:65532 --network none \
  --tmpfs /tmp:uid=65532,gid=65532 "$image" server --node-id=1 --region=us-east --bootstrap --insecure \
  --data-dir=/tmp/data --api-listen=127.0.0.1:7400 --peer-listen=127.0.0.1:7401 \
  --xds-listen=127.0.0.1:7402 --admin-listen=127.0.0.1:7403 >/dev/null
docker exec -i meridian-restore bash -c 'cat > /tmp/backup.snap' < "$tmp/backup.snap"
until_ok 60 docker exec meridian-restore meridian --server 127.0.0.1:7400 cluster status \
  || fail "the restore cluster did not start"
docker exec meridian-restore meridian --server 127.0.0.1:7400 snapshot restore /tmp/backup.snap >/dev/null \
  || fail "snapshot restore into a new cluster"
config_of "$bin" --server "$east" > "$tmp/config-before"
config_of docker exec meridian-restore meridian --server 127.0.0.1:7400 > "$tmp/config-restored"
[ "$(grep -vc '^==' "$tmp/config-before")" -ge 9 ] || fail "the deployment's config looks empty: $(cat "$tmp/config-before")"
diff "$tmp/config-before" "$tmp/config-restored" >&2 || fail "the restored config differs from the backed-up one"
docker rm -f meridian-restore >/dev/null
phase "runbook backup/restore: $(grep -vc '^==' "$tmp/config-before") objects saved in us-east-1, restored identical into a new cluster"

# 2. A controller whose disk is gone: us-east-3 (id 13) loses its volume.
docker rm -f us-east-3 >/dev/null
docker volume rm "${project}_us-east-3" >/dev/null
"$bin" --server "$east,$west" cluster remove-node 13 >/dev/null || fail "remove-node 13"
until_ok 120 voters_ready "$west" 8 || fail "8 voters after removing us-east-3's id"
node_cert 14 us-east-3 10.90.0.13
controller us-east-3-r 14 us-east 10.90.0.13 us-east-3 us-east-1:7400,us-east-2:7400
until_ok 240 voters_ready "$west" 9 || fail "the replacement (id 14) did not join as the ninth voter"
until_ok 60 in_cli us-east-3-r --server 127.0.0.1:7400 get service hello \
  || fail "the replacement does not serve the config"
until_ok 120 synced "$west" envoy-us-east || fail "envoy-us-east not synced after the replacement"
phase "runbook lost disk: us-east-3 back as id 14 on a fresh volume, 9 voters"

# 3. Removing a region and adding it back.
for id in 31 32 33; do
  "$bin" --server "$east,$west" cluster remove-node "$id" >/dev/null || fail "remove-node $id"
done
docker stop -t 5 ap-south-1 ap-south-2 ap-south-3 >/dev/null
until_ok 120 voters_ready "$west" 6 || fail "6 voters after removing ap-south"
printf 'kind: service\nname: without-ap-south\nspec:\n  port: 8080\n' > "$tmp/w.yaml"
until_ok 60 "$bin" --server "$east,$west" apply -f "$tmp/w.yaml" || fail "a write without ap-south"
until_ok 60 body 18001 us-east || fail "us-east stopped serving without ap-south"
until_ok 60 body 18002 eu-west || fail "eu-west stopped serving without ap-south"
# ap-south's Envoy keeps its last config while its controllers are gone
# (its agent is cut off too: once its lease expires, its Envoy fails over
# to another region's endpoints).
until_ok 60 curl -sf -m 5 127.0.0.1:18003/ || fail "ap-south's Envoy stopped serving"
phase "runbook remove region: ap-south's ids removed, 6 voters serve and commit"
ids=(34 35 36)
for k in 1 2 3; do
  id=${ids[$((k - 1))]}
  node_cert "$id" "ap-south-$k" "10.90.0.4$k"
  docker rm -f "ap-south-$k" >/dev/null
  controller "ap-south-$k-r" "$id" ap-south "10.90.0.4$k" "ap-south-$k" us-east-1:7400,eu-west-1:7400
done
until_ok 300 voters_ready "$west" 9 || fail "ap-south's new ids did not join as voters"
until_ok 60 in_cli ap-south-1-r --server 127.0.0.1:7400 get service without-ap-south \
  || fail "ap-south's new controllers lack the write made without them"
until_ok 120 synced "$west" envoy-ap-south || fail "envoy-ap-south not synced on the new controllers"
until_ok 60 body 18003 ap-south || fail "ap-south's Envoy does not serve after the region came back"
phase "runbook add region: ap-south back as ids 34-36, 9 voters, its Envoy synced"

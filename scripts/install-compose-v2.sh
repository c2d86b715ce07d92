#!/usr/bin/env bash
# Prints the path of a Compose v2 binary (the Go rewrite), installing it
# under .cache/compose-v2 first if needed, so deploy/compose/test.sh can run
# the demo under both Composes its README promises. Debian 12 ships only
# docker-compose 1.29 (Python); Debian 13's `docker-compose` package is v2.
# It is taken from trixie through a private apt configuration (its own
# sources and lists under .cache, nothing added to the system's apt, the
# installed 1.29 left alone), signature-checked by apt against the system's
# Debian archive keyring, and unpacked, not installed: the binary is static.
#   install-compose-v2.sh        prints e.g. .cache/compose-v2/usr/bin/docker-compose
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=$root/.cache/compose-v2
bin=$dir/usr/bin/docker-compose
# Pinned: a newer trixie point release may move it; the check below says so.
want=2.26.1
if [ -x "$bin" ] && "$bin" version 2>/dev/null | grep -q "$want"; then
  echo "$bin"
  exit 0
fi
apt=$dir/apt
mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/sources"
cat > "$apt/sources/trixie.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
opts=(-o "Dir::Etc::sourcelist=/dev/null" -o "Dir::Etc::sourceparts=$apt/sources"
      -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
      -o "APT::Get::List-Cleanup=0" -o "APT::Sandbox::User=root")
apt-get -qq "${opts[@]}" update >&2
version=$(apt-cache "${opts[@]}" show docker-compose 2>/dev/null | awk '/^Version:/ {print $2; exit}')
case $version in
  "$want"*) ;;
  *) echo "install-compose-v2.sh: trixie's docker-compose is '$version', not $want: update 'want' here" >&2; exit 1 ;;
esac
(cd "$apt" && rm -f docker-compose_*.deb && apt-get -qq "${opts[@]}" download "docker-compose=$version" >&2)
dpkg-deb -x "$apt"/docker-compose_*.deb "$dir"
rm -f "$apt"/docker-compose_*.deb
"$bin" version >&2
echo "$bin"

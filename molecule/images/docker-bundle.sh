#!/usr/bin/env bash
# The offline Docker bundle the test hosts and the sandbox install from
# (Docker's repository is not reachable here): Debian 13's Docker 26,
# Compose v2 and buildx, with the Debian 12 packages they need, made by
# scripts/docker-bundle.sh for a fresh ytempire/systemd-<distro> host.
#
#   molecule/images/docker-bundle.sh [DISTRO]     prints the bundle's path
#
# A second run with nothing changed costs a second.
set -euo pipefail
distro=${1:-${MOLECULE_DISTRO:-debian12}}
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${YTEMPIRE_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ytempire/images}/../docker-bundle-$distro
"$root/molecule/images/build.sh" "$distro" > /dev/null
mkdir -p "$out"
out=$(cd "$out" && pwd)
# One build at a time (pytest workers and scenarios may ask together): the
# second caller waits, then finds the bundle current.
exec 8> "$out.lock"
flock 8
"$root/scripts/docker-bundle.sh" --image "ytempire/systemd-$distro:latest" --out "$out" \
  --source "deb http://deb.debian.org/debian trixie main" --pin "release n=trixie" \
  docker.io/trixie docker-cli/trixie containerd/trixie docker-compose/trixie docker-buildx/trixie >&2
echo "$out"

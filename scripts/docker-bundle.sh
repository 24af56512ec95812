#!/usr/bin/env bash
# Build an offline bundle of Docker packages for air-gapped hosts: the .deb
# files a fresh host of the target distribution lacks, and an apt index
# (Packages) so the docker role can install them with apt like any source
# (docker_install_source: offline, docker_offline_bundle: OUT).
#
#   scripts/docker-bundle.sh --image IMAGE --out DIR [--source "deb URL SUITE COMPONENT"]
#                            [--keyring FILE] [--pin "release n=SUITE"] PACKAGE[/SUITE]...
#
# IMAGE is a container image of the target distribution as it is before the
# role runs (ytempire/systemd-debian12 here; an ubuntu:22.04 derivative for
# production). The closure is what apt in that image would install, so the
# bundle is complete for such a host. --source adds an apt source inside the
# throwaway container (Docker's repository, or another suite of the
# distribution); --keyring is the signing key that source needs; --pin gives
# that source priority 100, so that only the packages asked for as
# PACKAGE/SUITE come from it and the rest of the closure from the host's own
# distribution.
#
# Examples:
#   # Docker CE 24.0 for Ubuntu 22.04 hosts (on a machine that reaches Docker):
#   scripts/docker-bundle.sh --image ubuntu-jammy-base --out bundle-jammy \
#     --keyring docker.asc \
#     --source "deb https://download.docker.com/linux/ubuntu jammy stable" \
#     docker-ce=5:24.0.9-1~ubuntu.22.04~jammy docker-ce-cli=5:24.0.9-1~ubuntu.22.04~jammy \
#     containerd.io docker-buildx-plugin docker-compose-plugin
#   # Debian 13's Docker 26 and Compose v2 for Debian 12 hosts (the test bundle):
#   scripts/docker-bundle.sh --image ytempire/systemd-debian12 --out bundle-debian12 \
#     --source "deb http://deb.debian.org/debian trixie main" --pin "release n=trixie" \
#     docker.io/trixie containerd/trixie docker-compose/trixie docker-buildx/trixie
#
# A second run with the same arguments and an existing bundle does nothing
# (the arguments' hash is kept in OUT/.bundle-id).
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

image='' out='' source_line='' keyring='' pin=''
packages=()
while [ $# -gt 0 ]; do
  case "$1" in
    --image) image=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --source) source_line=$2; shift 2 ;;
    --keyring) keyring=$2; shift 2 ;;
    --pin) pin=$2; shift 2 ;;
    -h|--help) usage ;;
    -*) echo "docker-bundle.sh: unknown option $1" >&2; usage ;;
    *) packages+=("$1"); shift ;;
  esac
done
if [ -z "$image" ] || [ -z "$out" ] || [ ${#packages[@]} -eq 0 ]; then usage; fi
[ -z "$keyring" ] || [ -r "$keyring" ] || { echo "docker-bundle.sh: cannot read $keyring" >&2; exit 2; }

id=$( { docker image inspect --format '{{.Id}}' "$image"; echo "$source_line $pin";
        [ -z "$keyring" ] || sha256sum < "$keyring"; printf '%s\n' "${packages[@]}"; } | sha256sum | cut -c1-16)
if [ -f "$out/Packages" ] && [ "$(cat "$out/.bundle-id" 2>/dev/null)" = "$id" ]; then
  echo "docker-bundle.sh: $out is current ($(find "$out" -maxdepth 1 -name '*.deb' | wc -l) packages)"
  exit 0
fi

mkdir -p "$out"
work=$(mktemp -d)
container="docker-bundle-$$"
cleanup() { docker rm -f "$container" > /dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

docker run -d --name "$container" --entrypoint sleep "$image" 3600 > /dev/null
if [ -n "$source_line" ]; then
  if [ -n "$keyring" ]; then
    docker cp "$keyring" "$container:/etc/apt/keyrings/bundle-source.asc"
    source_line="deb [signed-by=/etc/apt/keyrings/bundle-source.asc] ${source_line#deb }"
  fi
  docker exec "$container" sh -c "mkdir -p /etc/apt/keyrings && echo '$source_line' > /etc/apt/sources.list.d/bundle-source.list"
fi
if [ -n "$pin" ]; then
  docker exec "$container" sh -c "printf 'Package: *\nPin: %s\nPin-Priority: 100\n' '$pin' > /etc/apt/preferences.d/bundle-source"
fi
# Download only: the packages and every dependency the image does not have.
docker exec "$container" sh -ec '
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends --download-only "$@" > /dev/null
' sh "${packages[@]}"
mkdir -p "$work/debs"
docker cp "$container:/var/cache/apt/archives/." "$work/debs/"
# The index is written with apt-ftparchive, installed only now so that it is
# not part of the bundle.
docker exec "$container" sh -c 'apt-get install -y -qq --no-install-recommends apt-utils > /dev/null'

rm -f "$out"/*.deb "$out"/Packages "$out"/SHA256SUMS
find "$work/debs" -maxdepth 1 -name '*.deb' -exec cp {} "$out/" \;
docker cp "$out/." "$container:/bundle/"
docker exec "$container" sh -c 'cd /bundle && apt-ftparchive packages . > Packages'
docker cp "$container:/bundle/Packages" "$out/Packages"
(cd "$out" && sha256sum ./*.deb Packages > SHA256SUMS)
echo "$id" > "$out/.bundle-id"
echo "docker-bundle.sh: $(find "$out" -maxdepth 1 -name '*.deb' | wc -l) packages in $out"

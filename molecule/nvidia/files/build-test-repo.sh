#!/usr/bin/env bash
# Build a signed test mirror of NVIDIA's two apt repositories: the CUDA
# repository's driver packages and the NVIDIA Container Toolkit's.
#
#   build-test-repo.sh OUT_DIR
#
# NVIDIA's servers cannot be reached from the test network, and Debian has no
# nvidia-container-toolkit: the packages here are STAND-INS, built with
# dpkg-deb from minimal control files. They have the real names and versions
# the nvidia role selects, but ship no driver: only what the role and the
# docker role look at (the persistence daemon's unit, nvidia-ctk and
# nvidia-container-runtime, which print a version or hand over to runc).
#
# Environment (the scenario's prepare.yml takes the names from the role):
#   DRIVER_PACKAGES        driver package names, space-separated
#   DRIVER_VERSIONS        versions built of each (a newer branch among them:
#                          the role's pin must keep apt off it)
#   PERSISTENCED_PACKAGE   the driver package that ships nvidia-persistenced
#   TOOLKIT_VERSIONS       versions of the four toolkit packages
#   ARCH                   Debian architecture (default: dpkg's)
#
# Layout (both flat repositories, "Suites: /", like NVIDIA's):
#   OUT_DIR/cuda/                                    driver packages
#   OUT_DIR/libnvidia-container/stable/deb/ARCH/     toolkit packages
#   OUT_DIR/key.asc, OUT_DIR/key.fpr                 the throwaway signing key
set -euo pipefail

out=${1:?usage: build-test-repo.sh OUT_DIR}
arch=${ARCH:-$(dpkg --print-architecture)}
: "${DRIVER_PACKAGES:?}" "${DRIVER_VERSIONS:?}" "${PERSISTENCED_PACKAGE:?}" "${TOOLKIT_VERSIONS:?}"
for tool in dpkg-deb apt-ftparchive gpg; do
  command -v "$tool" > /dev/null || { echo "build-test-repo.sh: $tool is missing (apt-get install apt-utils gnupg)" >&2; exit 1; }
done

rm -rf "$out"
driver_dir=$out/cuda
toolkit_dir=$out/libnvidia-container/stable/deb/$arch
mkdir -p "$driver_dir" "$toolkit_dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# stand_in DIR NAME VERSION [DEPENDS] [FILE=CONTENT ...]
stand_in() {
  local dir=$1 name=$2 version=$3 depends=${4:-} root file
  root=$work/$name-$version
  mkdir -p "$root/DEBIAN"
  {
    echo "Package: $name"
    echo "Version: $version"
    echo "Architecture: $arch"
    echo "Maintainer: YTEMPIRE tests <tests@ytempire.test>"
    [ -z "$depends" ] || echo "Depends: $depends"
    echo "Section: non-free/misc"
    echo "Priority: optional"
    echo "Description: test stand-in for NVIDIA's $name $version"
    echo " Built by molecule/nvidia/files/build-test-repo.sh: the real package cannot"
    echo " be downloaded in the test network. It installs no driver."
  } > "$root/DEBIAN/control"
  shift 4 || shift $#
  for file in "$@"; do
    mkdir -p "$root$(dirname "${file%%=*}")"
    printf '%s\n' "${file#*=}" > "$root${file%%=*}"
    case "${file%%=*}" in /usr/bin/*) chmod 0755 "$root${file%%=*}" ;; esac
  done
  dpkg-deb --root-owner-group --build "$root" "$dir/${name}_${version}_$arch.deb" > /dev/null
}

for version in $DRIVER_VERSIONS; do
  for name in $DRIVER_PACKAGES; do
    if [ "$name" = "$PERSISTENCED_PACKAGE" ]; then
      stand_in "$driver_dir" "$name" "$version" "" \
        "/usr/bin/nvidia-persistenced=#!/bin/sh
echo 'nvidia-persistenced (test stand-in): no NVIDIA device' >&2
exit 1" \
        "/lib/systemd/system/nvidia-persistenced.service=[Unit]
Description=NVIDIA Persistence Daemon (test stand-in)
Wants=syslog.target

[Service]
Type=forking
ExecStart=/usr/bin/nvidia-persistenced --user nobody

[Install]
WantedBy=multi-user.target"
    else
      stand_in "$driver_dir" "$name" "$version"
    fi
  done
done

for version in $TOOLKIT_VERSIONS; do
  upstream=${version%-*}
  stand_in "$toolkit_dir" libnvidia-container1 "$version"
  stand_in "$toolkit_dir" libnvidia-container-tools "$version" "libnvidia-container1 (>= $version)" \
    "/usr/bin/nvidia-container-cli=#!/bin/sh
echo 'cli-version: $upstream (test stand-in)'"
  stand_in "$toolkit_dir" nvidia-container-toolkit-base "$version" "" \
    "/usr/bin/nvidia-ctk=#!/bin/sh
echo 'NVIDIA Container Toolkit CLI version $upstream (test stand-in)'" \
    "/usr/bin/nvidia-container-runtime=#!/bin/sh
# Test stand-in: the real runtime adds the GPU hook and hands over to runc.
case \"\$1\" in --version) echo 'NVIDIA Container Runtime version $upstream (test stand-in)'; exit 0 ;; esac
exec runc \"\$@\""
  stand_in "$toolkit_dir" nvidia-container-toolkit "$version" \
    "nvidia-container-toolkit-base (= $version), libnvidia-container-tools (>= $version)" \
    "/usr/bin/nvidia-container-runtime-hook=#!/bin/sh
echo 'NVIDIA Container Runtime Hook version $upstream (test stand-in)'"
done

# A throwaway signing key, as NVIDIA signs its repositories.
export GNUPGHOME=$work/gnupg
mkdir -m 0700 "$GNUPGHOME"
gpg --batch --quiet --passphrase '' --quick-gen-key 'YTEMPIRE test mirror <mirror@ytempire.test>' ed25519 sign never
gpg --batch --armor --export > "$out/key.asc"
gpg --batch --quiet --with-colons --list-keys 2>/dev/null | awk -F: '$1 == "fpr" { print $10; exit }' > "$out/key.fpr"

for dir in "$driver_dir" "$toolkit_dir"; do
  (
    cd "$dir"
    apt-ftparchive packages . > Packages
    gzip -9nk Packages
    # Written aside first: the Release file must not list itself.
    apt-ftparchive release . > "$work/Release"
    mv "$work/Release" Release
    gpg --batch --quiet --yes --clearsign --output InRelease Release
    gpg --batch --quiet --yes --armor --detach-sign --output Release.gpg Release
  )
done
echo "build-test-repo.sh: $out signed by $(cat "$out/key.fpr")"

#!/usr/bin/env bash
# Build a local systemd test image (systemd as PID 1, python3, sudo) without a
# container registry: debootstrap a root filesystem and `docker import` it.
#
#   molecule/images/build.sh debian12|debian13|ubuntu2204
#
# The image is content-addressed: a hash of this script, the distribution
# settings and the extra CA bundle names the root filesystem. A second build
# with nothing changed finds the image (or the cached tarball) and costs seconds.
#
# Environment:
#   YTEMPIRE_EXTRA_CA_FILE   PEM bundle added to the image's trust store
#                            (default: the host's bundle when one exists, so a
#                            TLS-intercepting proxy the host trusts works inside)
#   YTEMPIRE_IMAGE_CACHE     where root filesystem tarballs are kept
#                            (default: ~/.cache/ytempire/images)
#   YTEMPIRE_DEBIAN_MIRROR / YTEMPIRE_UBUNTU_MIRROR   package mirrors
set -euo pipefail

distro=${1:-${MOLECULE_DISTRO:-debian12}}
cache=${YTEMPIRE_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ytempire/images}
ca_file=${YTEMPIRE_EXTRA_CA_FILE-/etc/ssl/certs/ca-certificates.crt}
debian_mirror=${YTEMPIRE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
ubuntu_mirror=${YTEMPIRE_UBUNTU_MIRROR:-http://archive.ubuntu.com/ubuntu}
packages=systemd,systemd-sysv,dbus,python3,python3-apt,sudo,ca-certificates,iproute2,procps,gnupg

case "$distro" in
  debian12) suite=bookworm; mirror=$debian_mirror; keyring=/usr/share/keyrings/debian-archive-keyring.gpg
            sources="deb $mirror bookworm main
deb $mirror bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main" ;;
  debian13) suite=trixie; mirror=$debian_mirror; keyring=/usr/share/keyrings/debian-archive-keyring.gpg
            sources="deb $mirror trixie main
deb $mirror trixie-updates main
deb http://deb.debian.org/debian-security trixie-security main" ;;
  ubuntu2204) suite=jammy; mirror=$ubuntu_mirror; keyring=/usr/share/keyrings/ubuntu-archive-keyring.gpg
            sources="deb $mirror jammy main universe
deb $mirror jammy-updates main universe
deb http://security.ubuntu.com/ubuntu jammy-security main universe" ;;
  *) echo "build.sh: unknown distribution '$distro' (choose debian12, debian13 or ubuntu2204)" >&2; exit 2 ;;
esac
image=ytempire/systemd-$distro

die() { echo "build.sh: $*" >&2; exit 1; }
command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "no Docker engine answers (start dockerd first)"

ca_sum=none
if [ -n "$ca_file" ]; then
  [ -r "$ca_file" ] || die "extra CA bundle '$ca_file' is not readable (unset YTEMPIRE_EXTRA_CA_FILE or point it at a PEM file)"
  ca_sum=$(sha256sum < "$ca_file" | cut -c1-64)
fi
hash=$( { cat "$0"; echo "$distro $suite $mirror $packages $ca_sum"; echo "$sources"; } | sha256sum | cut -c1-16)

if [ "$(docker image inspect -f '{{ index .Config.Labels "ytempire.image.hash" }}' "$image:latest" 2>/dev/null)" = "$hash" ]; then
  echo "build.sh: $image:latest is current ($hash)"
  exit 0
fi

mkdir -p "$cache"
# One build per distribution at a time: concurrent callers wait, then find it built.
exec 9> "$cache/.$distro.lock"
flock 9
if [ "$(docker image inspect -f '{{ index .Config.Labels "ytempire.image.hash" }}' "$image:latest" 2>/dev/null)" = "$hash" ]; then
  echo "build.sh: $image:latest is current ($hash)"
  exit 0
fi
tarball=$cache/$distro-$hash.tar
if [ ! -s "$tarball" ]; then
  command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
  [ -r "$keyring" ] || die "keyring $keyring is missing (apt-get install debian-archive-keyring ubuntu-keyring)"
  root=$(mktemp -d "${TMPDIR:-/tmp}/ytempire-rootfs.XXXXXX")
  trap 'umount -R "$root/proc" 2>/dev/null || true; rm -rf "$root"' EXIT
  echo "build.sh: debootstrap $suite from $mirror (a few minutes, once)"
  debootstrap --variant=minbase --keyring="$keyring" --include="$packages" \
    "$suite" "$root" "$mirror" > "$cache/$distro-$hash.log" 2>&1 \
    || { tail -n 30 "$cache/$distro-$hash.log" >&2; die "debootstrap failed (log: $cache/$distro-$hash.log)"; }

  printf '%s\n' "$sources" > "$root/etc/apt/sources.list"
  if [ -n "$ca_file" ]; then
    # update-ca-certificates wants one certificate per file: split the bundle.
    mkdir -p "$root/usr/local/share/ca-certificates/image-build"
    awk -v dir="$root/usr/local/share/ca-certificates/image-build" \
      '/BEGIN CERTIFICATE/ { n++; f = sprintf("%s/extra-%03d.crt", dir, n) } f { print > f } /END CERTIFICATE/ { close(f); f = "" }' "$ca_file"
    chroot "$root" update-ca-certificates > /dev/null 2>&1
  fi
  # What a cloud image of the distribution has that minbase lacks, and nothing
  # a real server would not have: no /var/log/auth.log, no sshd, no rsyslog.
  echo "ytempire-test" > "$root/etc/hostname"
  : > "$root/etc/machine-id"
  # Units that cannot work in a container and only slow the boot.
  for unit in getty.target systemd-udevd.service systemd-udev-trigger.service \
              systemd-modules-load.service sys-kernel-config.mount \
              sys-kernel-debug.mount systemd-remount-fs.service \
              systemd-firstboot.service; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
  done
  # Docker mounts /proc/sys read-only. Its net/ part belongs to the
  # container's own network namespace: a nested engine must set its bridges'
  # sysctls there, and the kernel role can apply net.* keys live. This one
  # unit makes it writable at boot, for Molecule's hosts, the sandbox and the
  # pytest targets alike; keys outside net/ stay read-only (they are the
  # machine's own).
  cat > "$root/etc/systemd/system/ytempire-test-proc-sys-net.service" <<'UNIT'
[Unit]
Description=Make the container's own network sysctls writable (test hosts only)
DefaultDependencies=no
Before=sysinit.target systemd-sysctl.service
ConditionVirtualization=container

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'test -w /proc/sys/net/ipv4/ip_forward || { mount --bind /proc/sys/net /proc/sys/net && mount -o remount,bind,rw /proc/sys/net; }'

[Install]
WantedBy=sysinit.target
UNIT
  mkdir -p "$root/etc/systemd/system/sysinit.target.wants"
  ln -sf ../ytempire-test-proc-sys-net.service "$root/etc/systemd/system/sysinit.target.wants/ytempire-test-proc-sys-net.service"
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log
  tar --numeric-owner -C "$root" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
fi

docker import "$tarball" "$image:rootfs" > /dev/null
# Image metadata that `docker import --change` cannot set on every engine.
if ! docker build -q -t "$image:latest" - > /dev/null 2> "$cache/$distro-$hash.build.log" <<EOF
FROM $image:rootfs
ENV container=docker
LABEL ytempire.image.hash=$hash ytempire.image.distro=$distro
STOPSIGNAL SIGRTMIN+3
CMD ["/lib/systemd/systemd"]
EOF
then
  cat "$cache/$distro-$hash.build.log" >&2
  die "docker build of $image failed"
fi
echo "build.sh: built $image:latest ($hash)"

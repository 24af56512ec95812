#!/usr/bin/env bash
# Start a systemd test host from a local image and wait until systemd has
# booted. The flags mirror the platform in .config/molecule/config.yml.
#
#   molecule/images/start.sh NAME [DISTRO] [NETWORK] [DOCKER_VOLUME]
#
# NETWORK is created when missing; DOCKER_VOLUME names the volume that holds
# the nested engine's /var/lib/docker (default: an anonymous one).
set -euo pipefail
name=${1:?usage: start.sh NAME [DISTRO] [NETWORK] [DOCKER_VOLUME]}
distro=${2:-${MOLECULE_DISTRO:-debian12}}
network=${3:-}
docker_volume=${4:-}
here=$(cd "$(dirname "$0")" && pwd)

"$here/build.sh" "$distro"
if [ -z "$(docker ps -q --filter "name=^${name}\$")" ]; then
  docker rm -f -v "$name" > /dev/null 2>&1 || true
  args=(--detach --name "$name" --hostname "$name"
        --cap-add SYS_ADMIN --cap-add NET_ADMIN --cap-add NET_RAW --cap-add SYS_PTRACE
        --security-opt seccomp=unconfined --cgroupns host
        --volume /sys/fs/cgroup:/sys/fs/cgroup:rw
        --volume "${docker_volume:+$docker_volume:}/var/lib/docker"
        --tmpfs /run --tmpfs /run/lock)
  if [ -n "$network" ]; then
    docker network inspect "$network" > /dev/null 2>&1 || docker network create "$network" > /dev/null
    args+=(--network "$network")
  fi
  docker run "${args[@]}" "ytempire/systemd-$distro:latest" > /dev/null
fi

state=unknown
for _ in $(seq 120); do
  state=$(docker exec "$name" systemctl is-system-running 2>/dev/null || true)
  case "$state" in running|degraded) echo "start.sh: $name is up ($state)"; exit 0 ;; esac
  sleep 0.5
done
echo "start.sh: systemd in $name did not finish booting (state: $state)" >&2
docker exec "$name" systemctl --failed --no-pager >&2 || true
exit 1

#!/usr/bin/env bash
# The local sandbox: a systemd container that plays the production server.
#
#   scripts/sandbox.sh up       bootstrap, start the sandbox host, run site.yml, summarise
#   scripts/sandbox.sh status   summarise what the sandbox server is now
#   scripts/sandbox.sh down     remove the sandbox host and its volumes
#
# SANDBOX_DISTRO picks the image (debian12, debian13, ubuntu2204).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
name=ytempire-sandbox
distro=${SANDBOX_DISTRO:-debian12}
cd "$root"

summary() { .venv/bin/ansible-playbook playbooks/summary.yml; }

case "${1:-up}" in
  up)
    scripts/bootstrap.sh
    molecule/images/start.sh "$name" "$distro" "$name" "$name-docker"
    # What the sandbox installs instead of Docker's repository and Docker Hub.
    molecule/images/docker-bundle.sh "$distro" > /dev/null
    molecule/images/registry.sh > /dev/null
    molecule/images/stack-images.sh > /dev/null
    .venv/bin/ansible-playbook site.yml
    summary ;;
  status)
    summary ;;
  down)
    docker rm -f -v "$name" > /dev/null 2>&1 || true
    docker volume rm "$name-docker" > /dev/null 2>&1 || true
    docker network rm "$name" > /dev/null 2>&1 || true
    echo "sandbox.sh: $name removed" ;;
  *)
    echo "usage: scripts/sandbox.sh up|status|down" >&2; exit 2 ;;
esac

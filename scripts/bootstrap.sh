#!/usr/bin/env bash
# Make this machine ready to run the project, from nothing but git and python3
# (Debian 12+, Ubuntu 22.04+, as root): Python >= 3.11, a virtualenv in .venv
# with the pinned toolchain (pyproject.toml), debootstrap, a running Docker
# engine. Idempotent: a second run with nothing changed takes seconds.
#
#   scripts/bootstrap.sh [EXTRAS]     EXTRAS: comma-separated pyproject extras (dev,app)
set -euo pipefail
extras=${1:-}
root=$(cd "$(dirname "$0")/.." && pwd)
log() { printf '==> %s\n' "$*"; }
die() { printf 'bootstrap.sh: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root: it installs packages and starts a Docker engine"
command -v apt-get > /dev/null || die "apt-get not found: only Debian and Ubuntu are supported"

apt_updated=false
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! $apt_updated; then apt-get update -qq; apt_updated=true; fi
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
}

# Python >= 3.11 with venv (Ubuntu 22.04 ships 3.10: take 3.11 from its archive).
python=""
for candidate in python3.13 python3.12 python3.11 python3; do
  if command -v "$candidate" > /dev/null &&
     "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    python=$(command -v "$candidate"); break
  fi
done
if [ -z "$python" ]; then
  apt_install python3.11 python3.11-venv
  python=$(command -v python3.11)
fi
if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
  apt_install "python3-venv" || apt_install "$(basename "$python")-venv"
fi

# Images are built locally with debootstrap; containers need a Docker engine.
apt_install debootstrap debian-archive-keyring ca-certificates
if ! command -v dockerd > /dev/null; then
  apt_install docker.io
fi
if ! docker info > /dev/null 2>&1; then
  if [ -d /run/systemd/system ]; then
    systemctl enable --now docker > /dev/null 2>&1 || systemctl start docker
  else
    log "starting dockerd (log: /var/log/ytempire-dockerd.log)"
    nohup dockerd > /var/log/ytempire-dockerd.log 2>&1 &
  fi
  for _ in $(seq 60); do docker info > /dev/null 2>&1 && break; sleep 1; done
  docker info > /dev/null 2>&1 || die "the Docker engine did not start (see /var/log/ytempire-dockerd.log)"
fi

# The controller's checkers of the monitoring's files: promtool and amtool
# (Debian's prometheus and prometheus-alertmanager; no service is started
# here). The monitoring role's preflight checks the rules and configurations
# with them before anything on the server changes; the tests check the
# metrics files the roles write.
apt_install prometheus prometheus-alertmanager

# The test suite's linters: shellcheck of shell scripts (tests/test_gpu_check.py runs it).
case ",$extras," in
  *,dev,*) apt_install shellcheck ;;
esac

# Host packages the app's tests need (PostgreSQL, Redis, ffmpeg, espeak-ng).
case ",$extras," in
  *,app,*) [ -f "$root/app/debian-packages.txt" ] && mapfile -t app_pkgs < <(grep -v '^\s*#' "$root/app/debian-packages.txt" | grep .) && apt_install "${app_pkgs[@]}" ;;
esac

# The virtualenv, rebuilt only when the pins or the extras change.
venv=$root/.venv
stamp=$( { cat "$root/pyproject.toml" "$root"/requirements-dev.txt "$root"/app/requirements*.txt 2>/dev/null; echo "$extras $python"; } | sha256sum | cut -c1-16)
if [ "$(cat "$venv/.ytempire-stamp" 2>/dev/null)" != "$stamp" ]; then
  log "creating the virtualenv in .venv with ${python} (${extras:-no extras})"
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  spec="$root"
  [ -n "$extras" ] && spec="${root}[${extras}]"
  "$venv/bin/python" -m pip install -q "$spec"
  echo "$stamp" > "$venv/.ytempire-stamp"
fi
# The whole output, then its first line: `| head` closes the pipe early and a
# cold ansible prints a BrokenPipeError traceback.
ansible_version=$("$venv/bin/ansible" --version)
log "ready: ${ansible_version%%$'\n'*}, $(docker version -f 'Docker {{.Server.Version}}')"

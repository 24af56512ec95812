#!/usr/bin/env bash
# Build the video service image without a package index inside the build.
#
#   BASE_IMAGE=ytempire/systemd-debian12:latest app/build-image.sh
#
# On the host, before `docker build`:
#   1. wheelhouse/debs: the .deb files the base lacks for ffmpeg, espeak-ng, fonts
#      and python3, downloaded by apt in a throwaway container of the base image;
#   2. wheelhouse/py: wheels for requirements.txt (pip wheel, or pip download for
#      the base's Python when it differs from the host's) and pip's own wheel.
# Both are reused while their inputs (base image id, package list, requirements,
# Python version) are unchanged. The Dockerfile only COPYs and installs them.
#
# Environment:
#   BASE_IMAGE  base image, present locally (default: the Dockerfile's CUDA runtime)
#   IMAGE       tag to build (default ytempire/ytvideo:latest)
#   PYTHON      host Python with pip, used to prepare the wheels (default python3)
#   IMAGE_PIP_VERSION  pip used inside the build (default 26.3)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
base=${BASE_IMAGE:-nvidia/cuda:12.8.1-runtime-ubuntu24.04}
image=${IMAGE:-ytempire/ytvideo:latest}
python=${PYTHON:-python3}
packages="ffmpeg espeak-ng fonts-dejavu-core python3"
wheelhouse=$here/wheelhouse
system_tag="${image%:*}-system:build"

die() { echo "build-image.sh: $*" >&2; exit 1; }
say() { echo "build-image.sh: $*"; }

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "no Docker engine answers (start dockerd)"
docker image inspect "$base" >/dev/null 2>&1 \
  || die "base image '$base' is not here; build it (molecule/images/build.sh debian12) or pull it where a registry is reachable"
"$python" -m pip --version >/dev/null 2>&1 || die "'$python -m pip' does not work; set PYTHON to a Python with pip"

# 1. The .deb files the base image lacks.
base_id=$(docker image inspect -f '{{.Id}}' "$base")
debs=$wheelhouse/debs
stamp="$base_id $packages $(sha256sum < "$0" | cut -c1-16)"
if [ "$(cat "$debs/.stamp" 2>/dev/null)" != "$stamp" ]; then
  say "downloading .deb files for: $packages"
  rm -rf "$debs"
  mkdir -p "$debs/partial"
  docker run --rm --network host --user 0 -v "$debs:/out" --entrypoint /bin/sh "$base" -c "
      set -e
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends --download-only \
        -o Dir::Cache::archives=/out $packages
      rm -rf /out/partial /out/lock
      chown -R $(id -u):$(id -g) /out" \
    || die "apt could not download $packages in a container of $base"
  echo "$stamp" > "$debs/.stamp"
fi
say "$(find "$debs" -name '*.deb' | wc -l) .deb files in $debs"

# 2. The system stage tells which Python the wheels are for.
say "building the system stage ($system_tag)"
docker build --quiet --target system --build-arg BASE_IMAGE="$base" -t "$system_tag" "$here" >/dev/null \
  || die "the system stage failed to build (see: docker build --target system $here)"
image_full=$(docker run --rm --entrypoint python3 "$system_tag" -c 'import platform; print(platform.python_version())')
image_python=${image_full%.*}
host_python=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

py=$wheelhouse/py
pip_version=${IMAGE_PIP_VERSION:-26.3}  # the pip that installs inside the build, from its wheel
stamp="$image_full pip-$pip_version $(cat "$here/requirements.txt" "$0" | sha256sum | cut -c1-64)"
if [ "$(cat "$py/.stamp" 2>/dev/null)" != "$stamp" ]; then
  rm -rf "$py"
  mkdir -p "$py"
  if [ "$image_python" = "$host_python" ]; then
    say "building wheels for Python $image_python with pip wheel"
    "$python" -m pip wheel --quiet --wheel-dir "$py" -r "$here/requirements.txt"
  else
    say "downloading wheels for Python $image_python (host has $host_python)"
    "$python" -m pip download --quiet --dest "$py" --only-binary=:all: \
      --python-version "$image_python" --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform linux_x86_64 \
      -r "$here/requirements.txt"
  fi
  "$python" -m pip download --quiet --no-deps --dest "$py" "pip==$pip_version"
  # Environment markers were evaluated for the host's interpreter (pip cannot
  # evaluate them for another); let the image's Python resolve offline against
  # the wheelhouse and add what it finds missing (redis needs async-timeout
  # below Python 3.11.3, for one).
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    if out=$(docker run --rm --network none -v "$py:/wheels:ro" -v "$here/requirements.txt:/req.txt:ro" \
        --user 0 --entrypoint /bin/sh "$system_tag" -c \
        'python3 -m venv --without-pip /tmp/venv && /tmp/venv/bin/python "$(ls /wheels/pip-*.whl)/pip" \
           install --dry-run --no-index --find-links /wheels --disable-pip-version-check --quiet \
           -r /req.txt' 2>&1); then
      break
    fi
    missing=$(printf '%s\n' "$out" | sed -n 's/.*No matching distribution found for \([^ ]*\).*/\1/p' | head -n 1)
    [ -n "$missing" ] || die "the image's Python cannot install from the wheelhouse: $out"
    say "adding $missing, which Python $image_python in the image needs"
    "$python" -m pip wheel --quiet --wheel-dir "$py" "$missing"
  done
  echo "$stamp" > "$py/.stamp"
fi
say "$(find "$py" -name '*.whl' | wc -l) wheels in $py"

# 3. The image, offline.
say "building $image from $base"
docker build --build-arg BASE_IMAGE="$base" -t "$image" "$here"
say "built $image"

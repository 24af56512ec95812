#!/usr/bin/env bash
# Build the images of the platform's Compose stack without a registry and save
# each as an image archive (`docker save`), the way an air-gapped host receives
# its images (docker_image_archives loads them).
#
#   molecule/images/stack-images.sh [postgres] [redis] [ytvideo] [frontend] [n8n]
#                                   [postgres-exporter] [redis-exporter]
#
# Prints the archives' paths, one per line, always in the order above (all of
# them without arguments, else the ones named):
#
#   stack-postgres.tar  ytempire/postgres:15      Debian's postgresql-15, laid out like postgres:15
#   stack-redis.tar     ytempire/redis:7          Debian's redis-server 7.0, like redis:7
#   stack-ytvideo.tar   ytempire/ytvideo:latest   app/build-image.sh on the systemd base (CPU torch)
#   stack-frontend.tar  ytempire/frontend:latest  frontend/ on nginx, port 3000
#   stack-n8n.tar       ytempire/n8n:1            n8n 1.x from npm on Debian 13's Node 20
#   stack-postgres-exporter.tar  ytempire/postgres-exporter:0.11  Debian's, like postgres-exporter
#   stack-redis-exporter.tar     ytempire/redis-exporter:1.45     Debian's, like redis_exporter
#
# Images are FROM the local systemd bases (molecule/images/build.sh), their
# Dockerfiles and entrypoints in molecule/images/stack/<name>/. Each archive is
# content-addressed: a hash of this script, the image's inputs and its base
# image's id, kept in the archive's .hash sidecar (with the saved image's id).
# A second run with nothing changed builds nothing and costs seconds; it loads
# an archive whose image the engine lacks (or holds under another id). One
# lock per image: concurrent callers wait, then find the archive current.
#
# Environment:
#   YTEMPIRE_IMAGE_CACHE   where the archives and build logs go
#                          (default: ~/.cache/ytempire/images)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
self=$here/$(basename "${BASH_SOURCE[0]}")
cache=${YTEMPIRE_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ytempire/images}
all=(postgres redis ytvideo frontend n8n postgres-exporter redis-exporter)

# Progress goes to stderr: stdout is the list of archives.
say() { echo "stack-images.sh: $*" >&2; }
die() { echo "stack-images.sh: $*" >&2; exit 1; }
usage() { echo "usage: stack-images.sh [${all[*]}]..." >&2; exit 2; }

tag_of() {
  case "$1" in
    postgres) echo ytempire/postgres:15 ;;
    redis) echo ytempire/redis:7 ;;
    ytvideo) echo ytempire/ytvideo:latest ;;
    frontend) echo ytempire/frontend:latest ;;
    n8n) echo ytempire/n8n:1 ;;
    postgres-exporter) echo ytempire/postgres-exporter:0.11 ;;
    redis-exporter) echo ytempire/redis-exporter:1.45 ;;
  esac
}

# n8n 1.x's newest releases want Node >= 20.19: Debian 13's; the rest, Debian 12.
distro_of() {
  case "$1" in
    n8n) echo debian13 ;;
    *) echo debian12 ;;
  esac
}

# The files an image is made of, relative to the repository.
inputs_of() {
  case "$1" in
    ytvideo) echo app/ytvideo app/Dockerfile app/.dockerignore app/requirements.txt app/build-image.sh ;;
    frontend) echo molecule/images/stack/frontend frontend ;;
    *) echo "molecule/images/stack/$1" ;;
  esac
}

hash_of() {
  local name=$1 base_id=$2 path
  local -a inputs
  read -ra inputs <<< "$(inputs_of "$name")"
  {
    cat "$self"
    echo "$name $(tag_of "$name") $base_id"
    for path in "${inputs[@]}"; do
      [ -e "$root/$path" ] || die "input $path of $name is missing"
      (cd "$root" && find "$path" -name __pycache__ -prune -o -type f -print0 \
        | LC_ALL=C sort -z | xargs -0 sha256sum)
    done
  } | sha256sum | cut -c1-16
}

# Build the image: app/build-image.sh for ytvideo, else `docker build` of
# molecule/images/stack/<name>/ (with frontend/ as site/ for the frontend).
build_image() {
  local name=$1 tag=$2 base=$3 hash=$4 log=$5 context status=0
  if [ "$name" = ytvideo ]; then
    BASE_IMAGE=$base IMAGE=$tag "$root/app/build-image.sh" > "$log" 2>&1 || status=$?
    return "$status"
  fi
  context=$(mktemp -d "${TMPDIR:-/tmp}/ytempire-stack-$name.XXXXXX")
  cp -a "$here/stack/$name/." "$context/"
  if [ "$name" = frontend ]; then
    cp -a "$root/frontend" "$context/site"
  fi
  docker build --build-arg BASE_IMAGE="$base" --label "ytempire.image.hash=$hash" \
    -t "$tag" "$context" > "$log" 2>&1 || status=$?
  rm -rf "$context"
  return "$status"
}

# Make the archive of one image current and print its path.
stack_image() {
  local name=$1 tag distro base base_id hash archive log started image_id
  tag=$(tag_of "$name")
  distro=$(distro_of "$name")
  base=ytempire/systemd-$distro:latest
  "$here/build.sh" "$distro" >&2 || die "the base image $base could not be built"
  base_id=$(docker image inspect -f '{{.Id}}' "$base")
  hash=$(hash_of "$name" "$base_id")
  archive=$cache/stack-$name.tar

  exec 9> "$cache/.stack-$name.lock"
  flock 9
  if [ -s "$archive" ] && [ "$(sed -n 1p "$archive.hash" 2>/dev/null)" = "$hash" ]; then
    image_id=$(sed -n 2p "$archive.hash")
    if [ "$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null)" != "$image_id" ]; then
      say "loading $tag from $archive"
      docker load -q -i "$archive" > /dev/null || die "docker load of $archive failed"
    fi
    exec 9>&-
    echo "$archive"
    return 0
  fi

  log=$cache/stack-$name-$hash.build.log
  say "building $tag from $base ($hash; log: $log)"
  started=$SECONDS
  if ! build_image "$name" "$tag" "$base" "$hash" "$log"; then
    tail -n 40 "$log" >&2
    die "building $tag failed (log: $log)"
  fi
  docker save -o "$archive.tmp" "$tag" || die "docker save of $tag failed"
  chmod 0644 "$archive.tmp"  # an image, not a secret: other users' tests load it too
  mv "$archive.tmp" "$archive"
  image_id=$(docker image inspect -f '{{.Id}}' "$tag")
  printf '%s\n%s\n' "$hash" "$image_id" > "$archive.hash"
  say "built $tag in $((SECONDS - started)) s: $archive ($(du -h "$archive" | cut -f1))"
  # The logs of earlier inputs describe nothing that is still here.
  find "$cache" -maxdepth 1 -name "stack-$name-*.build.log" ! -name "${log##*/}" -delete
  exec 9>&-
  echo "$archive"
}

main() {
  local name wanted
  local -a selected=()
  for wanted in "$@"; do
    case " ${all[*]} " in
      *" $wanted "*) ;;
      *) echo "stack-images.sh: unknown image '$wanted'" >&2; usage ;;
    esac
  done
  for name in "${all[@]}"; do
    if [ "$#" -eq 0 ] || [[ " $* " == *" $name "* ]]; then
      selected+=("$name")
    fi
  done

  command -v docker > /dev/null || die "docker is not installed"
  docker info > /dev/null 2>&1 || die "no Docker engine answers (start dockerd first)"
  command -v flock > /dev/null || die "flock is missing (apt-get install util-linux)"
  mkdir -p "$cache"
  for name in "${selected[@]}"; do
    stack_image "$name"
  done
}

main "$@"

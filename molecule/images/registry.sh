#!/usr/bin/env bash
# Build the registry image the tests use instead of Docker Hub's registry:2
# (no registry is reachable here), from Debian's docker-registry package (the
# same Distribution project, 2.8), and save it as an image archive, the way an
# air-gapped host receives its images (docker_image_archives).
#
#   molecule/images/registry.sh        prints the archive's path (registry-2.tar)
#
# The image is FROM scratch: the registry binary, the C library it links and
# the registry:2 layout (config in /etc/docker/registry, data in
# /var/lib/registry, port 5000). A second run with nothing changed reuses the
# archive.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${YTEMPIRE_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ytempire/images}
image=ytempire/registry:2
"$here/build.sh" debian12 > /dev/null
base_id=$(docker image inspect --format '{{.Id}}' ytempire/systemd-debian12:latest)
hash=$( { cat "$0"; echo "$base_id"; } | sha256sum | cut -c1-16)
archive=$cache/registry-2.tar
mkdir -p "$cache"
exec 9> "$cache/.registry.lock"
flock 9
if [ -s "$archive" ] && [ "$(cat "$archive.hash" 2>/dev/null)" = "$hash" ]; then
  docker image inspect "$image" > /dev/null 2>&1 || docker load -q -i "$archive" > /dev/null
  echo "$archive"
  exit 0
fi

work=$(mktemp -d)
container=registry-build-$$
trap 'docker rm -f "$container" > /dev/null 2>&1 || true; rm -rf "$work"' EXIT
docker run -d --name "$container" --entrypoint sleep ytempire/systemd-debian12:latest 600 > /dev/null
docker exec "$container" sh -ec '
  apt-get update -qq
  cd /tmp && apt-get download -qq docker-registry
  mkdir -p /out/usr/bin /out/etc/docker/registry /out/var/lib/registry /out/lib64 /out/lib/x86_64-linux-gnu /out/tmp
  dpkg -x /tmp/docker-registry_*.deb /tmp/pkg
  cp /tmp/pkg/usr/bin/docker-registry /out/usr/bin/registry
  for lib in $(ldd /out/usr/bin/registry | grep -o "/lib[^ ]*"); do cp -L "$lib" "/out$lib"; done
  cp -a /etc/ssl /out/etc/ssl 2>/dev/null || true
  echo "nobody:x:65534:65534:nobody:/:/usr/sbin/nologin" > /out/etc/passwd
' > /dev/null
docker cp "$container:/out" "$work/rootfs"
# registry:2's own configuration (Debian's asks for htpasswd logins).
cat > "$work/rootfs/etc/docker/registry/config.yml" <<'CONFIG'
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
CONFIG
cat > "$work/Dockerfile" <<DOCKERFILE
FROM scratch
COPY rootfs/ /
VOLUME ["/var/lib/registry"]
EXPOSE 5000
LABEL ytempire.image.hash=$hash org.opencontainers.image.description="Distribution registry 2.8 from Debian's docker-registry"
ENTRYPOINT ["/usr/bin/registry"]
CMD ["serve", "/etc/docker/registry/config.yml"]
DOCKERFILE
docker build -q -t "$image" "$work" > /dev/null
docker save -o "$archive.tmp" "$image"
mv "$archive.tmp" "$archive"
echo "$hash" > "$archive.hash"
echo "$archive"

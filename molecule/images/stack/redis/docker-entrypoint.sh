#!/usr/bin/env bash
# The official redis image's entrypoint contract, for Debian's redis-server:
#   - a first argument starting with '-' or ending in .conf means
#     `redis-server <args>`;
#   - started as root: own /data, then run as redis (uid 999), umask 0077;
#   - protected mode off by default: the official image compiles it off, so
#     other containers reach a server without a password. Here it is the first
#     option after the configuration file, so a later `--protected-mode yes`
#     (or the configuration file's own setting) still wins.
set -euo pipefail

if [ "${1:0:1}" = '-' ] || [ "${1%.conf}" != "$1" ]; then
  set -- redis-server "$@"
fi

if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
  find . \! -user redis -exec chown redis '{}' +
  exec setpriv --reuid=redis --regid=redis --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [ "$1" = redis-server ]; then
  shift
  config=()
  if [ "$#" -gt 0 ] && [ "${1:0:1}" != '-' ]; then
    config=("$1")
    shift
  fi
  default=(--protected-mode no)
  if [ "${#config[@]}" -gt 0 ] && [ -r "${config[0]}" ] \
      && grep -Eqi '^[[:space:]]*protected-mode[[:space:]]' "${config[0]}"; then
    default=()
  fi
  set -- redis-server "${config[@]}" "${default[@]}" "$@"
fi

umask 0077
exec "$@"

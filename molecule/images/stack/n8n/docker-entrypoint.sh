#!/bin/sh
# The official n8nio/n8n entrypoint: trust the certificates mounted in
# /opt/custom-certificates, then run n8n with the container's arguments
# (`docker run ytempire/n8n:1 import:workflow --input=...` runs that command).
set -eu
if [ -d /opt/custom-certificates ]; then
  echo "Trusting custom certificates from /opt/custom-certificates."
  export NODE_OPTIONS="--use-openssl-ca ${NODE_OPTIONS:-}"
  export SSL_CERT_DIR=/opt/custom-certificates
  openssl rehash /opt/custom-certificates 2>/dev/null || true
fi
if [ "$#" -gt 0 ]; then
  exec n8n "$@"
fi
exec n8n

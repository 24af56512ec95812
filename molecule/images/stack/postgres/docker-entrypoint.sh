#!/usr/bin/env bash
# The official postgres image's entrypoint contract, for Debian's postgresql-15:
#   - a first argument starting with '-' means `postgres <args>`;
#   - started as root: fix PGDATA's ownership, then run as postgres (uid 999);
#   - an empty PGDATA: initdb (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB,
#     POSTGRES_INITDB_ARGS, POSTGRES_HOST_AUTH_METHOD, *_FILE variants), then
#     /docker-entrypoint-initdb.d/*.sql, *.sql.gz, *.sh once, on a server that
#     listens on the socket only; then exec the real server.
set -Eeuo pipefail

say() { echo "postgres-entrypoint: $*"; }
die() { echo "postgres-entrypoint: $*" >&2; exit 1; }

# VAR_FILE holds VAR's value (Docker secrets); both at once is an error.
file_env() {
  local var=$1 file_var="${1}_FILE" def=${2:-} val=
  if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
    die "both $var and $file_var are set (but are exclusive)"
  fi
  if [ -n "${!var:-}" ]; then
    val=${!var}
  elif [ -n "${!file_var:-}" ]; then
    val=$(< "${!file_var}")
  fi
  export "$var"="${val:-$def}"
  unset "$file_var"
}

setup_env() {
  file_env POSTGRES_PASSWORD
  file_env POSTGRES_USER postgres
  file_env POSTGRES_DB "$POSTGRES_USER"
  file_env POSTGRES_INITDB_ARGS
  : "${POSTGRES_HOST_AUTH_METHOD:=}"
  DATABASE_ALREADY_EXISTS=
  if [ -s "$PGDATA/PG_VERSION" ]; then
    DATABASE_ALREADY_EXISTS=true
  fi
}

create_dirs() {
  local user
  user=$(id -u)
  mkdir -p "$PGDATA"
  chmod 00700 "$PGDATA" || :
  mkdir -p /var/run/postgresql || :
  chmod 03775 /var/run/postgresql || :
  if [ "$user" = 0 ]; then
    find "$PGDATA" \! -user postgres -exec chown postgres '{}' +
    find /var/run/postgresql \! -user postgres -exec chown postgres '{}' +
  fi
}

verify_minimum_env() {
  if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
    cat >&2 <<'EOE'
Error: Database is uninitialized and superuser password is not specified.
       You must specify POSTGRES_PASSWORD to a non-empty value for the
       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".

       You may also use "POSTGRES_HOST_AUTH_METHOD=trust" to allow all
       connections without a password. This is *not* recommended.

       See PostgreSQL documentation about "trust":
       https://www.postgresql.org/docs/current/auth-trust.html
EOE
    exit 1
  fi
  if [ "${#POSTGRES_PASSWORD}" -ge 100 ]; then
    say "warning: POSTGRES_PASSWORD is 100 characters or longer; some clients truncate it" >&2
  fi
}

init_database_dir() {
  # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of words, as in the official image
  initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
    $POSTGRES_INITDB_ARGS
}

setup_hba_conf() {
  local method=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
  {
    echo
    if [ "$method" = trust ]; then
      echo '# warning trust is enabled for all connections'
    fi
    echo "host all all all $method"
  } >> "$PGDATA/pg_hba.conf"
}

temp_server_start() {
  PGUSER=$POSTGRES_USER pg_ctl -D "$PGDATA" \
    -o "-c listen_addresses='' -p ${PGPORT:-5432}" -w start
}

temp_server_stop() {
  PGUSER=$POSTGRES_USER pg_ctl -D "$PGDATA" -m fast -w stop
}

psql_cmd() {
  PGHOST=/var/run/postgresql PGPASSWORD='' psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" \
    --no-password --no-psqlrc "$@"
}

setup_db() {
  local exists
  exists=$(psql_cmd --dbname postgres --set db="$POSTGRES_DB" --tuples-only <<'EOSQL'
SELECT 1 FROM pg_database WHERE datname = :'db' ;
EOSQL
)
  if [ -z "${exists// /}" ]; then
    psql_cmd --dbname postgres --set db="$POSTGRES_DB" <<'EOSQL'
CREATE DATABASE :"db" ;
EOSQL
  fi
}

process_init_files() {
  local f
  for f in "$@"; do
    case "$f" in
      *.sh)
        if [ -x "$f" ]; then
          say "running $f"; "$f"
        else
          say "sourcing $f"
          # shellcheck disable=SC1090  # the operator's init script
          . "$f"
        fi ;;
      *.sql) say "running $f"; psql_cmd --dbname "$POSTGRES_DB" -f "$f" ;;
      *.sql.gz) say "running $f"; gunzip -c "$f" | psql_cmd --dbname "$POSTGRES_DB" ;;
      *) say "ignoring $f" ;;
    esac
  done
}

want_help() {
  local arg
  for arg; do
    case "$arg" in
      -'?'|--help|--describe-config|-V|--version) return 0 ;;
    esac
  done
  return 1
}

main() {
  if [ "${1:0:1}" = '-' ]; then
    set -- postgres "$@"
  fi
  if [ "$1" = postgres ] && ! want_help "$@"; then
    setup_env
    create_dirs
    if [ "$(id -u)" = 0 ]; then
      # The official image uses gosu; util-linux's setpriv does the same.
      exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
    fi
    if [ -z "$DATABASE_ALREADY_EXISTS" ]; then
      verify_minimum_env
      ls /docker-entrypoint-initdb.d/ > /dev/null
      init_database_dir
      setup_hba_conf
      export PGPASSWORD=${PGPASSWORD:-$POSTGRES_PASSWORD}
      temp_server_start
      setup_db
      shopt -s nullglob
      process_init_files /docker-entrypoint-initdb.d/*
      shopt -u nullglob
      temp_server_stop
      unset PGPASSWORD
      say "PostgreSQL init process complete; ready for start up."
    else
      say "PostgreSQL Database directory appears to contain a database; Skipping initialization"
    fi
  fi
  exec "$@"
}

main "$@"

#!/bin/sh
# The official postgres image's first start, as far as docker-compose.yml relies on it: an
# empty data folder is initialised with the superuser POSTGRES_USER (default postgres) whose
# password is POSTGRES_PASSWORD (required), POSTGRES_DB (default: the user's name) is created,
# and the server then listens on every interface with that password required over TCP
# (SCRAM); local socket connections inside the container are trusted, as in the official image.
set -eu

if [ "${1:-}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    user=${POSTGRES_USER:-postgres}
    database=${POSTGRES_DB:-$user}
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "postgres stand-in: POSTGRES_PASSWORD must be set" >&2
        exit 1
    fi
    password_file=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$password_file"
    initdb --pgdata="$PGDATA" --username="$user" --pwfile="$password_file" \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 \
        >/dev/null
    rm -f "$password_file"
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    if [ "$database" != postgres ]; then
        # A private socket while the database is created: pg_isready (the health check) must
        # not call the server ready before it is.
        pg_ctl --pgdata="$PGDATA" --wait --silent \
            --options="-c listen_addresses='' -c unix_socket_directories=/tmp" start
        psql --no-psqlrc --quiet --set=ON_ERROR_STOP=1 --host=/tmp --username="$user" \
            --dbname=postgres --set=database="$database" <<'SQL'
CREATE DATABASE :"database";
SQL
        pg_ctl --pgdata="$PGDATA" --wait --silent --mode=fast stop
    fi
    echo "postgres stand-in: initialised $PGDATA (user $user, database $database)"
fi
exec "$@"

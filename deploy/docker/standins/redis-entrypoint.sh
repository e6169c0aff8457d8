#!/bin/sh
# As the official redis image: redis-server started without a configuration file (compose
# passes only options) turns protected mode off, so that other containers may connect.
set -eu
if [ "${1:-}" = redis-server ] && [ ! -f "${2:-}" ]; then
    set -- "$@" --protected-mode no
fi
exec "$@"

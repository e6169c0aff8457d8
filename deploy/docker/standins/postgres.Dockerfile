# Stand-in for postgres:16-alpine, from Debian's postgresql (15 on bookworm): what
# docker-compose.yml uses of the official image — POSTGRES_USER, POSTGRES_PASSWORD and
# POSTGRES_DB on first start, the data in /var/lib/postgresql/data, pg_isready on the PATH,
# a password required over TCP.
ARG DEBIAN_BASE
FROM ${DEBIAN_BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql \
 && pg_lsclusters --no-header | while read -r version cluster _; do \
        pg_dropcluster --stop "$version" "$cluster"; \
    done \
 && ln -s "$(ls -d /usr/lib/postgresql/*/bin)" /usr/local/lib/postgresql-bin \
 && install -d -o postgres -g postgres -m 700 /var/lib/postgresql/data \
 && install -d -o postgres -g postgres -m 2775 /var/run/postgresql \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/*
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN chmod 755 /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/local/lib/postgresql-bin:$PATH \
    PGDATA=/var/lib/postgresql/data \
    LANG=C.UTF-8
USER postgres
VOLUME /var/lib/postgresql/data
EXPOSE 5432
# Fast shutdown, as the official image asks for: SIGTERM would wait for every client to leave.
STOPSIGNAL SIGINT
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]

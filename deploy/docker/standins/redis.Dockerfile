# Stand-in for redis:7-alpine, from Debian's redis-server (7.0 on bookworm): redis-server and
# redis-cli on the PATH, run as the redis user in /data, answering other containers as the
# official image does.
ARG DEBIAN_BASE
FROM ${DEBIAN_BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server \
 && install -d -o redis -g redis -m 755 /data \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/*
COPY redis-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN chmod 755 /usr/local/bin/docker-entrypoint.sh
USER redis
WORKDIR /data
VOLUME /data
EXPOSE 6379
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]

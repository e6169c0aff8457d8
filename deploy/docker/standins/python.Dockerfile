# Stand-in for python:3.11-slim, from Debian's packages: bookworm's python3 (3.11), its venv
# module, and the CA certificates. What the Dockerfile needs of its BASE_IMAGE.
ARG DEBIAN_BASE
FROM ${DEBIAN_BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y python3 python3-venv ca-certificates \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/*
ENV LANG=C.UTF-8
CMD ["python3"]

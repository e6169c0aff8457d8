# One image for every Otesse Auth service: `otesse-auth serve <service>` picks which one runs
# (gateway, authorize, token, registry, bookings); `otesse-auth migrate` and `otesse-auth purge`
# run the Job and the CronJob from the same image.
#
# BASE_IMAGE is any Python 3.11 image with `python3` and its venv module: the official
# python:3.11-slim by default; `make test-containers` builds a stand-in from Debian's packages
# where no container registry answers (deploy/README.md).
#
# The runtime wheels come from PyPI, or, when the build context holds deploy/docker/wheelhouse/
# (`scripts/wheelhouse` fills it on the host with the host's pip configuration), from that
# folder only: then the build needs no network at all. Either way every file is checked against
# the lock's hashes.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# Dependencies first, from the lock with its hashes, so code changes reuse this layer.
COPY requirements.lock pyproject.toml ./
COPY deploy/docker/ deploy/docker/
RUN python3 deploy/docker/runtime-requirements.py requirements.lock pyproject.toml > runtime.lock \
 && python3 -m venv /opt/otesse \
 && if [ -d deploy/docker/wheelhouse ]; then \
        set -- --no-index --find-links deploy/docker/wheelhouse; \
    fi \
 && /opt/otesse/bin/pip install --require-hashes --no-deps "$@" --requirement runtime.lock
COPY otesse otesse
COPY services services
# Then the project itself; pip, setuptools and wheel have done their work and stay behind, and
# every module is compiled now (hash-checked, so no timestamp can make Python want to write a
# fresh .pyc to the read-only filesystem at run time).
RUN /opt/otesse/bin/pip install --no-deps --no-build-isolation --no-index . \
 && /opt/otesse/bin/pip uninstall --yes --quiet pip setuptools wheel \
 && /opt/otesse/bin/python -m compileall -q --invalidation-mode unchecked-hash /opt/otesse/lib

FROM ${BASE_IMAGE}
# No build tools in what runs: the official base ships pip, setuptools and wheel; they go (a
# base without them, such as Debian's python3, has nothing to remove).
RUN if python3 -m pip --version >/dev/null 2>&1; then \
        python3 -m pip uninstall --yes --quiet --disable-pip-version-check pip setuptools wheel; \
    fi \
 && groupadd --system --gid 10001 otesse \
 && useradd --system --uid 10001 --gid otesse --no-create-home --shell /usr/sbin/nologin otesse
COPY --from=build /opt/otesse /opt/otesse
# In a container every service listens on all interfaces (locally they default to 127.0.0.1);
# the root filesystem can be read-only: no bytecode is written at run time, /tmp is the only
# writable path.
ENV PATH=/opt/otesse/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OTESSE_GATEWAY_HOST=0.0.0.0 \
    OTESSE_GATEWAY_ADMIN_HOST=0.0.0.0 \
    OTESSE_AUTHORIZE_HOST=0.0.0.0 \
    OTESSE_TOKEN_HTTP_HOST=0.0.0.0 \
    OTESSE_TOKEN_GRPC_HOST=0.0.0.0 \
    OTESSE_TOKEN_EDGE_HOST=0.0.0.0 \
    OTESSE_REGISTRY_GRPC_HOST=0.0.0.0 \
    OTESSE_REGISTRY_HTTP_HOST=0.0.0.0 \
    OTESSE_BOOKINGS_HOST=0.0.0.0
USER 10001:10001
WORKDIR /tmp
# gateway, its admin port, authorize, token (HTTP, edge, gRPC), registry (gRPC, admin), bookings
EXPOSE 8000 8010 8001 8002 8005 50052 50051 8003 8100
ENTRYPOINT ["otesse-auth"]
CMD ["serve", "gateway"]

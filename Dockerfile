# syntax=docker/dockerfile:1
# One image for every Otesse Auth service: `otesse-auth serve <service>` picks which one runs
# (gateway, authorize, token, registry, bookings); `otesse-auth migrate` and `otesse-auth purge`
# run the Job and the CronJob from the same image.

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# Dependencies first, from the lock with its hashes, so code changes reuse this layer.
COPY requirements.lock pyproject.toml ./
COPY deploy/docker/runtime-requirements.py deploy/docker/
RUN python deploy/docker/runtime-requirements.py requirements.lock pyproject.toml > runtime.lock \
 && python -m venv /opt/otesse \
 && /opt/otesse/bin/pip install --require-hashes --no-deps -r runtime.lock
COPY otesse otesse
COPY services services
RUN /opt/otesse/bin/pip install --no-deps --no-build-isolation --no-index . \
 && /opt/otesse/bin/python -m compileall -q /opt/otesse/lib

FROM python:3.11-slim
RUN groupadd --system --gid 10001 otesse \
 && useradd --system --uid 10001 --gid otesse --no-create-home --shell /usr/sbin/nologin otesse
COPY --from=build /opt/otesse /opt/otesse
# In a container every service listens on all interfaces (locally they default to 127.0.0.1);
# the root filesystem can be read-only: no bytecode is written at run time.
ENV PATH=/opt/otesse/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OTESSE_GATEWAY_HOST=0.0.0.0 \
    OTESSE_GATEWAY_ADMIN_HOST=0.0.0.0 \
    OTESSE_AUTHORIZE_HOST=0.0.0.0 \
    OTESSE_TOKEN_HTTP_HOST=0.0.0.0 \
    OTESSE_TOKEN_GRPC_HOST=0.0.0.0 \
    OTESSE_REGISTRY_GRPC_HOST=0.0.0.0 \
    OTESSE_REGISTRY_HTTP_HOST=0.0.0.0 \
    OTESSE_BOOKINGS_HOST=0.0.0.0
USER 10001:10001
WORKDIR /tmp
# gateway, its admin port, authorize, token (HTTP, gRPC), registry (gRPC, admin), bookings
EXPOSE 8000 8010 8001 8002 50052 50051 8003 8100
ENTRYPOINT ["otesse-auth"]
CMD ["serve", "gateway"]

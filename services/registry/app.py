"""Wiring of the registry: the gRPC server, plus a small HTTP app for health and metrics.

The gRPC server starts and stops inside the HTTP app's lifespan, so one process has one graceful
stop: on SIGTERM readiness turns false and the gRPC health ``NOT_SERVING`` (clients move to the
other replicas), after the drain the gRPC server stops with a grace period, then the pool closes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from grpc import aio
from starlette.applications import Starlette

from otesse.auth.v1 import registry_pb2, registry_pb2_grpc
from services.common import db
from services.common.grpc_server import STOP_GRACE_SECONDS, GrpcServer
from services.common.grpc_server import create_server as create_grpc_server
from services.common.http import Readiness, RequestContextMiddleware, health_routes
from services.common.service_auth import DEV_CREDENTIAL_WARNING, AccessPolicyInterceptor
from services.registry.servicer import ACCESS, ClientRegistryServicer
from services.registry.settings import RegistrySettings
from services.registry.store import PgClientStore

log = logging.getLogger("otesse.registry")
SERVICE_NAME = registry_pb2.DESCRIPTOR.services_by_name["ClientRegistry"].full_name


def create_server(settings: RegistrySettings, pool: db.Queries, *, port: int | None = None,
                  ) -> GrpcServer:
    """The ``ClientRegistry`` gRPC server (``port=0`` binds a free port, for tests)."""
    servicer = ClientRegistryServicer(
        PgClientStore(pool), default_overlap_seconds=settings.secret_overlap_seconds)

    def add(server: aio.Server) -> list[str]:
        registry_pb2_grpc.add_ClientRegistryServicer_to_server(servicer, server)
        return [SERVICE_NAME]

    access = AccessPolicyInterceptor(service="registry", policy=ACCESS,
                                     key=settings.service_credentials.key_bytes)
    return create_grpc_server(service="registry", add_servicers=add, host=settings.grpc_host,
                              port=settings.grpc_port if port is None else port,
                              tls=settings.tls, interceptors=[access])


def create_app(settings: RegistrySettings, readiness: Readiness | None = None) -> Starlette:
    readiness = readiness or Readiness()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if settings.service_credentials.is_default:
            log.warning(DEV_CREDENTIAL_WARNING)
        pool = await db.create_pool(settings.stores, application_name="otesse-registry")
        readiness.dependencies["postgres"] = lambda: db.ping(pool)
        server = create_server(settings, pool)
        await server.start()
        readiness.on_drain.append(server.drain)
        log.info("registry serving", extra={"grpc_port": server.port})
        try:
            yield
        finally:
            readiness.draining = True
            await server.stop(grace=STOP_GRACE_SECONDS)
            await pool.close()

    app = Starlette(routes=health_routes(readiness), lifespan=lifespan)
    app.add_middleware(RequestContextMiddleware, service="registry")
    return app

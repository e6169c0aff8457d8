"""The bookings API: ``GET /v1/bookings`` (``bookings:read``), ``GET /v1/customers``
(``customers:read``), each answered for the user the token acts for."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.bookings import data
from services.bookings.settings import BookingsSettings
from services.common.http import Readiness, RequestContextMiddleware, health_routes
from services.resource_kit import (
    GrpcTokenValidator,
    JwksTokenValidator,
    LocalTokenValidator,
    TokenValidator,
    ValidatedToken,
    requires_scopes,
)


def _acting_for(request: Request) -> dict[str, str]:
    token: ValidatedToken = request.state.token
    return {"user_id": token.subject, "client_id": token.client_id}


@requires_scopes("bookings:read")
async def list_bookings(request: Request) -> Response:
    return JSONResponse({"data": list(data.BOOKINGS), **_acting_for(request)})


@requires_scopes("customers:read")
async def list_customers(request: Request) -> Response:
    return JSONResponse({"data": list(data.CUSTOMERS), **_acting_for(request)})


def create_validator(settings: BookingsSettings) -> TokenValidator:
    if settings.validation == "jwks":
        return JwksTokenValidator(settings.jwks_url, issuer=settings.issuer,
                                  audience=settings.audience)
    if settings.validation == "local":
        return LocalTokenValidator(settings.token_grpc_addr, settings.jwks_url,
                                   issuer=settings.issuer, audience=settings.audience,
                                   stale_after=settings.feed_stale_seconds, tls=settings.tls,
                                   subscriber="bookings")
    return GrpcTokenValidator(settings.token_grpc_addr, cache_seconds=settings.cache_seconds,
                              tls=settings.tls)


def create_app(settings: BookingsSettings, readiness: Readiness | None = None) -> Starlette:
    readiness = readiness or Readiness()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.token_validator = validator = create_validator(settings)
        readiness.dependencies["token"] = validator.ping
        try:
            yield
        finally:
            await app.state.token_validator.close()

    app = Starlette(routes=[
        Route("/v1/bookings", list_bookings, methods=["GET"]),
        Route("/v1/customers", list_customers, methods=["GET"]),
        *health_routes(readiness),
    ], lifespan=lifespan)
    app.add_middleware(RequestContextMiddleware, service="bookings")
    return app

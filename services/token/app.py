"""Wiring of the token service: the HTTP app (token, revocation, introspection, metadata, JWKS,
health) and the gRPC ``TokenService`` server.

A failed client authentication (``invalid_client``, at any of the three client-authenticated
endpoints) is marked ``x-otesse-client-auth: failed`` for the gateway, which strips the mark and
charges the failure to the caller's address (:mod:`services.common.internal_headers`).

The lifespan opens the Postgres pool, Redis and the registry channel, listens for client
changes (which empty the client-authentication cache), loads the signing keys (and keeps
refreshing them), and starts the gRPC server. On SIGTERM readiness turns false and the gRPC
health ``NOT_SERVING`` (clients move to the other replicas); after the drain the gRPC server
stops with a grace period, then everything closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from otesse.auth.v1 import registry_pb2, registry_pb2_grpc, token_pb2, token_pb2_grpc
from services.common import db, internal_headers, redis_client
from services.common.client_cache import ClientChanges
from services.common.client_changes import ClientChangeFeed
from services.common.errors import InvalidClient
from services.common.fast_route import FastRouteStarlette
from services.common.grpc_client import create_channel
from services.common.grpc_server import (
    MAX_CONNECTION_AGE_GRACE_SECONDS,
    MAX_CONNECTION_AGE_SECONDS,
    STOP_GRACE_SECONDS,
    GrpcServer,
)
from services.common.grpc_server import create_server as create_grpc_server
from services.common.http import (
    Readiness,
    RequestContextMiddleware,
    classify,
    health_routes,
    json_error_handlers,
    oauth_error_response,
)
from services.common.ratelimit import RateLimiter
from services.common.redis_lean import LeanRedis
from services.common.service_auth import DEV_CREDENTIAL_WARNING, AccessPolicyInterceptor
from services.token.access_tokens import AccessTokenIssuer
from services.token.client_auth import ClientAuthenticator
from services.token.client_budget import ClientBudget
from services.token.denylist import DenyList
from services.token.grants.authorization_code import AuthorizationCodeGrant
from services.token.grants.base import Grant
from services.token.grants.refresh_token import RefreshTokenGrant
from services.token.introspection import Introspector
from services.token.keys import KeyRing, NoSigningKey, PgKeyStore, WrongKek
from services.token.metadata import authorization_server_metadata
from services.token.metrics import RATE_LIMIT_FAIL_OPEN, RATE_LIMITED
from services.token.revocation import Revoker
from services.token.revocation_feed import RevocationFeed
from services.token.revocation_log import RevocationLog
from services.token.servicer import ACCESS, TokenServiceServicer
from services.token.settings import JWKS_MAX_AGE_SECONDS, TokenSettings
from services.token.store import PgGrantStore
from services.token.token_endpoint import TokenEndpoint
from services.token.validation import AccessTokenValidator

log = logging.getLogger("otesse.token")
SERVICE_NAME = token_pb2.DESCRIPTOR.services_by_name["TokenService"].full_name
REGISTRY_SERVICE = registry_pb2.DESCRIPTOR.services_by_name["ClientRegistry"].full_name
# Resource servers may cache the JWKS this long; a new key is published (as "next") for far
# longer than this before it signs.
PUBLIC_CACHE = {"Cache-Control": f"public, max-age={JWKS_MAX_AGE_SECONDS}"}


@dataclass(frozen=True)
class TokenComponents:
    """Everything the endpoints and the gRPC servicer use, built from open connections."""

    ring: KeyRing
    store: PgGrantStore
    denylist: DenyList
    validator: AccessTokenValidator
    token_endpoint: TokenEndpoint
    revoker: Revoker
    introspector: Introspector
    revocation_log: RevocationLog
    feed: RevocationFeed


def build_components(settings: TokenSettings, *, pool: db.Queries, redis: aioredis.Redis,
                     lean: LeanRedis, limits: LeanRedis | None = None,
                     registry: registry_pb2_grpc.ClientRegistryAsyncStub,
                     client_changes: ClientChanges) -> TokenComponents:
    ring = KeyRing(PgKeyStore(pool), kek=settings.kek_bytes)
    store = PgGrantStore(pool, access_token_ttl=settings.access_token_ttl)
    revocation_log = RevocationLog(pool)
    denylist = DenyList(redis, reader=lean, redis_prefix=settings.stores.redis_prefix,
                        access_token_ttl=settings.access_token_ttl,
                        source=store.live_revocations, record=store.is_revoked)
    issuer = AccessTokenIssuer(ring, issuer=settings.issuer, audience=settings.audience,
                               ttl=settings.access_token_ttl)
    validator = AccessTokenValidator(ring, denylist, issuer=settings.issuer,
                                     audience=settings.audience,
                                     remembered=settings.verified_cache_size)
    authenticator = ClientAuthenticator(registry,
                                        cache_seconds=settings.client_auth_cache_seconds,
                                        changes=client_changes)
    budget = None
    if settings.rate_per_client is not None:
        # ``limits``: the rate limits' own Redis (OTESSE_RATE_LIMIT_REDIS_URL), else ``lean``'s.
        limiter = RateLimiter(limits or lean, prefix=settings.stores.redis_prefix,
                              service="token",
                              timeout=settings.rate_redis_timeout, limited=RATE_LIMITED,
                              failed_open=RATE_LIMIT_FAIL_OPEN)
        budget = ClientBudget(limiter, settings.rate_per_client)
    grants: list[Grant[Any]] = [
        AuthorizationCodeGrant(redis=lean, redis_prefix=settings.stores.redis_prefix,
                               store=store, access_tokens=issuer, denylist=denylist,
                               refresh_ttl=settings.refresh_token_ttl),
        RefreshTokenGrant(store=store, access_tokens=issuer, denylist=denylist,
                          refresh_ttl=settings.refresh_token_ttl,
                          retry_window=settings.refresh_retry_window),
    ]
    return TokenComponents(
        ring=ring, store=store, denylist=denylist, validator=validator,
        token_endpoint=TokenEndpoint(grants=grants, authenticator=authenticator,
                                     max_body_bytes=settings.max_body_bytes,
                                     trusted_proxies=settings.trusted_proxies, budget=budget),
        revoker=Revoker(store=store, denylist=denylist, ring=ring, issuer=settings.issuer,
                        authenticator=authenticator, max_body_bytes=settings.max_body_bytes,
                        trusted_proxies=settings.trusted_proxies),
        introspector=Introspector(store=store, validator=validator, issuer=settings.issuer,
                                  authenticator=authenticator,
                                  max_body_bytes=settings.max_body_bytes),
        revocation_log=revocation_log,
        feed=RevocationFeed(settings.stores.database_url.value, revocation_log,
                            application_name="otesse-token-revocation-feed",
                            max_subscribers=settings.feed_max_subscribers),
    )


def create_server(settings: TokenSettings, components: TokenComponents, *,
                  port: int | None = None,
                  max_connection_age: float = MAX_CONNECTION_AGE_SECONDS) -> GrpcServer:
    """The ``TokenService`` gRPC server (``port=0`` binds a free port, and a short
    ``max_connection_age`` cuts streams early, for tests)."""
    servicer = TokenServiceServicer(validator=components.validator, store=components.store,
                                    denylist=components.denylist, feed=components.feed,
                                    revocation_log=components.revocation_log)

    def add(server: aio.Server) -> list[str]:
        token_pb2_grpc.add_TokenServiceServicer_to_server(servicer, server)
        return [SERVICE_NAME]

    access = AccessPolicyInterceptor(service="token", policy=ACCESS,
                                     key=settings.service_credentials.key_bytes)
    return create_grpc_server(service="token", add_servicers=add, host=settings.grpc_host,
                              port=settings.grpc_port if port is None else port,
                              tls=settings.tls, interceptors=[access],
                              max_connection_age=max_connection_age,
                              max_connection_age_grace=min(MAX_CONNECTION_AGE_GRACE_SECONDS,
                                                           max_connection_age))


@dataclass(frozen=True)
class TokenRuntime:
    """What a running app holds (``app.state.runtime``), for health checks and tests."""

    components: TokenComponents
    grpc_port: int
    client_changes: ClientChangeFeed


async def client_auth_failed(request: Request, exc: Exception) -> Response:
    """``invalid_client``, marked for the gateway (which strips the mark)."""
    response = oauth_error_response(classify(exc))
    response.headers[internal_headers.CLIENT_AUTH] = internal_headers.CLIENT_AUTH_FAILED
    return response


def create_app(settings: TokenSettings, readiness: Readiness | None = None) -> Starlette:
    readiness = readiness or Readiness()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if settings.kek_is_default:
            log.warning("OTESSE_TOKEN_KEK is not set: signing keys are encrypted under the "
                        "PUBLIC local-development key. Set OTESSE_TOKEN_KEK in production.")
        if settings.service_credentials.is_default:
            log.warning(DEV_CREDENTIAL_WARNING)
        # The revocation log's trigger reads the access-token lifetime from the session.
        pool = await db.create_pool(settings.stores, application_name="otesse-token",
                                    session={"otesse.access_token_ttl":
                                             str(settings.access_token_ttl)})
        redis = redis_client.create_redis(settings.stores)
        lean = redis_client.create_lean(settings.stores)
        limits = (redis_client.create_rate_limit_redis(settings.stores)
                  if settings.stores.rate_limit_redis_url is not None else None)
        channel = create_channel(settings.registry_addr, services=(REGISTRY_SERVICE,),
                                 tls=settings.tls)
        client_changes = ClientChangeFeed(settings.stores.database_url.value,
                                          application_name="otesse-token-client-changes")
        listener = asyncio.create_task(client_changes.run())
        components = build_components(
            settings, pool=pool, redis=redis, lean=lean, limits=limits,
            registry=registry_pb2_grpc.ClientRegistryStub(channel),
            client_changes=client_changes)
        ring = components.ring
        rotation = {"rotation_seconds": settings.key_rotation_seconds,
                    "retire_after_seconds": settings.key_retirement_seconds}
        try:
            await ring.start(**rotation)
        except Exception as exc:  # noqa: BLE001 - start anyway; the refresher retries
            log.warning("signing keys not loaded yet", extra={
                "error": type(exc).__name__, "detail": str(exc) if isinstance(
                    exc, WrongKek) else ""})
        refresher = asyncio.create_task(ring.run(interval=settings.key_refresh_seconds,
                                                 **rotation))
        syncer = asyncio.create_task(
            components.denylist.run(interval=settings.denylist_sync_seconds))
        feed = asyncio.create_task(components.feed.run())
        server = create_server(settings, components,
                               max_connection_age=settings.grpc_max_connection_age)
        await server.start()
        readiness.on_drain.append(server.drain)
        app.state.runtime = TokenRuntime(components=components, grpc_port=server.port,
                                         client_changes=client_changes)
        health = health_pb2_grpc.HealthStub(channel)

        async def registry_ready() -> None:
            await health.Check(health_pb2.HealthCheckRequest(service=REGISTRY_SERVICE),
                               timeout=2.0)

        async def keys_ready() -> None:
            ring.current()

        readiness.dependencies.update({"postgres": lambda: db.ping(pool),
                                       "redis": lambda: redis_client.ping(redis, lean),
                                       "registry": registry_ready})
        readiness.checks["signing_keys"] = keys_ready
        log.info("token serving", extra={"grpc_port": server.port})
        try:
            yield
        finally:
            readiness.draining = True
            components.feed.end_all()
            await server.stop(grace=STOP_GRACE_SECONDS)
            for task in (refresher, syncer, listener, feed):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await channel.close()
            await redis.aclose()
            await lean.aclose()
            if limits is not None:
                await limits.aclose()
            await components.store.wait_idle()
            await pool.close()

    def components(request: Request) -> TokenComponents:
        runtime: TokenRuntime = request.app.state.runtime
        return runtime.components

    # The components open in the lifespan, so each endpoint finds its handler at request time.
    async def token(request: Request) -> Response:
        return await components(request).token_endpoint.handle(request)

    async def revoke(request: Request) -> Response:
        return await components(request).revoker.handle(request)

    async def introspect(request: Request) -> Response:
        return await components(request).introspector.handle(request)

    async def metadata(request: Request) -> Response:
        # The grant types are the ones the token endpoint dispatches to, never a second list.
        return JSONResponse(authorization_server_metadata(
            settings.issuer, grant_types=components(request).token_endpoint.grant_types),
            headers=PUBLIC_CACHE)

    async def jwks(request: Request) -> Response:
        ring = components(request).ring
        if not ring.loaded:
            raise NoSigningKey()
        return JSONResponse(ring.jwks(), headers=PUBLIC_CACHE)

    token_route = Route("/oauth/token", token, methods=["POST"])
    routes = [
        token_route,
        Route("/oauth/revoke", revoke, methods=["POST"]),
        Route("/oauth/introspect", introspect, methods=["POST"]),
        Route("/.well-known/oauth-authorization-server", metadata, methods=["GET"]),
        Route("/.well-known/jwks.json", jwks, methods=["GET"]),
        *health_routes(readiness),
    ]
    # POST /oauth/token, nearly all of the traffic, goes straight to its endpoint (inside the
    # same request context and with the same handlers): services.common.fast_route.
    app = FastRouteStarlette(routes=routes, lifespan=lifespan,
                             exception_handlers={**json_error_handlers(),
                                                 InvalidClient: client_auth_failed},
                             fast=("POST", token_route))
    # A path with a slash too many or too few is not redirected: Starlette would build the
    # absolute URL from the Host it was sent, an internal address behind the gateway.
    app.router.redirect_slashes = False
    app.add_middleware(RequestContextMiddleware, service="token")
    return app

"""Wiring of the authorize service: routes, middleware, and the stores opened in the lifespan.

Nothing here decides anything; see :mod:`authorization_endpoint`, :mod:`login` and
:mod:`pages`. The Postgres pool, Redis client and registry channel all connect lazily and
reconnect by themselves, so the service starts while a dependency is down (answering 503
pages) and recovers without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import resources

from grpc_health.v1 import health_pb2, health_pb2_grpc
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from otesse.auth.v1 import registry_pb2_grpc, token_pb2_grpc
from services.authorize import (
    account,
    app_form,
    authorization_endpoint,
    authorized_apps,
    login,
    logo,
    oauth_apps,
)
from services.authorize.clients import SERVICE_NAME, RegistryClients
from services.authorize.codes import RedisCodeStore
from services.authorize.components import Components
from services.authorize.consents import PgConsentStore
from services.authorize.developer_apps import RegistryDeveloperApps
from services.authorize.devices import RedisDeviceStore
from services.authorize.grants import SERVICE_NAME as TOKEN_SERVICE_NAME
from services.authorize.grants import TokenServiceGrants
from services.authorize.login_throttle import RedisLoginThrottle
from services.authorize.pages import html_error_handlers, render_error
from services.authorize.pending import RedisPendingStore
from services.authorize.secret_reveal import RedisRevealStore
from services.authorize.security_headers import SecurityHeadersMiddleware
from services.authorize.sessions import RedisSessionStore
from services.authorize.settings import AuthorizeSettings
from services.authorize.users import PgUserStore
from services.common import db, redis_client
from services.common.audit import PgAuditLog
from services.common.audit_search import AuditSearch
from services.common.client_changes import ClientChangeFeed
from services.common.fast_route import FastRouteStarlette
from services.common.grpc_client import create_channel
from services.common.http import Readiness, RequestContextMiddleware, health_routes
from services.common.service_auth import DEV_CREDENTIAL_WARNING, caller_interceptors

log = logging.getLogger("otesse.authorize")
_STATIC = str(resources.files("services.authorize") / "static")


def routes(readiness: Readiness) -> list[Route | Mount]:
    return [
        Route("/oauth/authorize", authorization_endpoint.authorize, methods=["GET"]),
        Route("/oauth/authorize/decision", authorization_endpoint.decide, methods=["POST"]),
        Route("/login", login.login_form, methods=["GET"]),
        Route("/login", login.login, methods=["POST"]),
        Route("/logout", login.logout, methods=["POST"]),
        Route("/", login.home, methods=["GET"]),
        Route("/apps/{client_id}/logo", logo.app_logo, methods=["GET"]),
        *settings_routes(),
        *health_routes(readiness),
        Mount("/static", StaticFiles(directory=_STATIC), name="static"),
    ]


def settings_routes() -> list[Route]:
    """Settings > Integrations > OAuth Apps, and Settings > Authorized apps."""
    apps = oauth_apps.BASE
    return [
        Route(apps, oauth_apps.list_apps, methods=["GET"]),
        Route(f"{apps}/new", oauth_apps.new_form, methods=["GET"]),
        Route(f"{apps}/new", oauth_apps.register, methods=["POST"]),
        Route(f"{apps}/{{client_id}}", oauth_apps.show, methods=["GET"]),
        Route(f"{apps}/{{client_id}}", oauth_apps.update, methods=["POST"]),
        Route(f"{apps}/{{client_id}}/credentials", oauth_apps.credentials, methods=["GET"]),
        Route(f"{apps}/{{client_id}}/rotate-secret", oauth_apps.rotate_secret,
              methods=["POST"]),
        Route(f"{apps}/{{client_id}}/delete", oauth_apps.confirm_delete, methods=["GET"]),
        Route(f"{apps}/{{client_id}}/delete", oauth_apps.delete, methods=["POST"]),
        Route(authorized_apps.PATH, authorized_apps.list_access, methods=["GET"]),
        Route(f"{authorized_apps.PATH}/{{client_id}}/revoke", authorized_apps.revoke,
              methods=["POST"]),
    ]


def create_app(settings: AuthorizeSettings, readiness: Readiness | None = None) -> Starlette:
    readiness = readiness or Readiness()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = await db.create_pool(settings.stores, application_name="otesse-authorize")
        redis = redis_client.create_redis(settings.stores)
        lean = redis_client.create_lean(settings.stores)
        tls = settings.tls if settings.tls.enabled or \
            settings.tls.ca_file else None
        if settings.service_credentials.is_default:
            log.warning(DEV_CREDENTIAL_WARNING)
        key = settings.service_credentials.key_bytes
        # Every call names this service: the registry lets it change clients, the token
        # service lets it list and revoke grants (DESIGN §5).
        channel = create_channel(settings.registry_addr, services=(SERVICE_NAME,), tls=tls,
                                 interceptors=caller_interceptors(
                                     key, caller="authorize", audience="registry"))
        registry = registry_pb2_grpc.ClientRegistryStub(channel)
        token_channel = create_channel(settings.token_addr, services=(TOKEN_SERVICE_NAME,),
                                       tls=tls, interceptors=caller_interceptors(
                                           key, caller="authorize", audience="token"))
        health = health_pb2_grpc.HealthStub(channel)
        client_changes = ClientChangeFeed(settings.stores.database_url.value,
                                          application_name="otesse-authorize-client-changes")
        listener = asyncio.create_task(client_changes.run())
        app.state.client_changes = client_changes
        prefix = settings.stores.redis_prefix
        consents = PgConsentStore(pool)
        app.state.components = Components(
            settings=settings,
            clients=RegistryClients(registry, ttl_seconds=settings.client_cache_seconds,
                                    max_entries=settings.client_cache_size,
                                    changes=client_changes),
            sessions=RedisSessionStore(lean, prefix=prefix,
                                       idle_seconds=settings.session_idle_seconds,
                                       absolute_seconds=settings.session_absolute_seconds),
            users=PgUserStore(pool),
            consents=consents,
            codes=RedisCodeStore(lean, prefix=prefix),
            pending=RedisPendingStore(redis, prefix=prefix),
            throttle=RedisLoginThrottle(redis, prefix=prefix, settings=settings.login),
            devices=RedisDeviceStore(redis, prefix=prefix,
                                     lifetime_seconds=settings.login.device_seconds),
            apps=RegistryDeveloperApps(registry),
            grants=TokenServiceGrants(token_pb2_grpc.TokenServiceStub(token_channel)),
            reveals=RedisRevealStore(redis, prefix=prefix),
            audit=PgAuditLog(pool),
            events=AuditSearch(pool),
        )

        async def registry_serving() -> None:
            response = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME),
                                          timeout=2.0)
            if response.status != health_pb2.HealthCheckResponse.SERVING:
                raise RuntimeError("registry not serving")

        checks: dict[str, Callable[[], Awaitable[object]]] = {
            "postgres": lambda: db.ping(pool),
            "redis": lambda: redis_client.ping(redis, lean),
            "registry": registry_serving,
        }
        readiness.dependencies.update(checks)
        log.info("authorize serving", extra={"registry": settings.registry_addr})
        try:
            yield
        finally:
            readiness.draining = True
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            await channel.close()
            await token_channel.close()
            await redis.aclose()
            await lean.aclose()
            await consents.wait_idle()
            await pool.close()

    every_route = routes(readiness)
    authorize_route = next(route for route in every_route if isinstance(route, Route)
                           and route.path == "/oauth/authorize")
    # GET /oauth/authorize, the hot path, goes straight to its endpoint (inside the same
    # middleware, with the same handlers): services.common.fast_route.
    app = FastRouteStarlette(routes=every_route, lifespan=lifespan,
                             exception_handlers={**html_error_handlers(),
                                                 account.SignInRequired: account.sign_in_redirect,
                                                 app_form.FormTooLarge: app_form.too_large_page},
                             fast=("GET", authorize_route))
    # A path with a slash too many or too few is not redirected: Starlette would build the
    # absolute URL from the Host it was sent, an internal address behind the gateway. Every
    # redirect here is relative or built from the configured issuer.
    app.router.redirect_slashes = False
    app.add_middleware(RequestContextMiddleware, service="authorize",
                       render_unexpected=render_error)
    # Outermost, so the page answering an unexpected error carries the headers too.
    app.add_middleware(SecurityHeadersMiddleware)
    return app

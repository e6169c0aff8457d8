"""Wiring of the gateway: the public proxy app and the internal admin app.

The public app is bare ASGI (every request goes through it, so it adds as little as it can);
for each request, in order: size limits (414, 431), ``Host`` (400, 421), the routing table
(400, 404), rate limits (429), then the upstream. Every answer, the upstream's or the
gateway's own, carries ``X-Request-ID``, ``X-Content-Type-Options: nosniff`` and, when the
client's connection is HTTPS, ``Strict-Transport-Security`` (RFC 6797 §7.2: "An HSTS Host MUST
NOT include the STS header field in HTTP responses conveyed over non-secure transport").

``/healthz``, ``/readyz`` and ``/metrics`` are served by the admin app, on its own port which no
Service or Ingress exposes publicly; on the public port those paths are 404.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.http import Readiness, RequestContextMiddleware, health_routes
from services.common.log import request_id_var
from services.common.redis_client import create_redis
from services.gateway import client_identity, forwarded, hop_by_hop, routing
from services.gateway.errors import (
    GatewayError,
    HeadersTooLarge,
    MalformedRequest,
    MisdirectedRequest,
    NotFound,
    PayloadTooLarge,
    ServerError,
    TooManyRequests,
    UriTooLong,
    send_error,
)
from services.gateway.hosts import HostAllowList, HostNotAllowed, MissingHost
from services.gateway.proxy import ClientDisconnected, RequestBody, UpstreamOptions, Upstreams
from services.gateway.ratelimit import Bucket, RateLimiter
from services.gateway.settings import GatewaySettings

log = logging.getLogger("otesse.gateway")

NOSNIFF = (b"x-content-type-options", b"nosniff")


class GatewayApp:
    """The public ASGI app: checks, rate limits and forwarding."""

    def __init__(self, settings: GatewaySettings, readiness: Readiness) -> None:
        self._settings = settings
        self._readiness = readiness
        self._hosts = HostAllowList.of(settings.allowed_hosts)
        self._upstreams = Upstreams(
            {"authorize": settings.authorize_url, "token": settings.token_url},
            UpstreamOptions(connect_timeout=settings.connect_timeout,
                            timeout=settings.upstream_timeout,
                            max_connections=settings.upstream_max_connections))
        self._redis: aioredis.Redis | None = None
        self._limiter: RateLimiter | None = None
        self._hsts = (b"strict-transport-security",
                      f"max-age={settings.hsts_max_age}; includeSubDomains".encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "websocket":
            # Nothing behind the gateway speaks WebSocket: refuse the handshake (403).
            await send({"type": "websocket.close", "code": 1008})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self._startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self._readiness.draining = True
                await self._shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _startup(self) -> None:
        self._upstreams.open()
        self._redis = create_redis(self._settings.stores)
        self._limiter = RateLimiter(self._redis, prefix=self._settings.stores.redis_prefix,
                                    timeout=self._settings.rate_redis_timeout)

        async def proxy_open() -> None:
            if not self._upstreams.is_open:
                raise RuntimeError("upstream clients are not open")

        # Redis is not a readiness check: without it the gateway still serves (fails open).
        self._readiness.checks["proxy"] = proxy_open
        log.info("gateway serving", extra={"authorize": self._settings.authorize_url,
                                           "token": self._settings.token_url})

    async def _shutdown(self) -> None:
        await self._upstreams.close()
        if self._redis is not None:
            await self._redis.aclose()

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        peer = scope.get("client")
        client = forwarded.resolve(peer[0] if peer else None, headers,
                                   scheme=scope.get("scheme", "http"),
                                   trusted=self._settings.trusted_proxies)
        extra = [NOSNIFF, self._hsts] if (client.proto == "https"
                                           and self._settings.hsts_max_age > 0) else [NOSNIFF]
        started = False

        async def secure_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        api = routing.is_api_path(scope["path"])
        try:
            route = self._route(scope, headers)
            api = route.api
            # RequestContextMiddleware labels its metric with scope["route"].path (bounded).
            scope["route"] = route
            await self._forward(scope, receive, secure_send, route, client, headers)
        except GatewayError as exc:
            if not started:
                await send_error(secure_send, exc, api=api)
        except ClientDisconnected:
            return
        except Exception:
            log.exception("gateway error")
            if not started:
                await send_error(secure_send, ServerError(), api=api)

    def _route(self, scope: Scope, headers: list[tuple[bytes, bytes]]) -> routing.Route:
        settings = self._settings
        if len(scope["raw_path"]) + len(scope["query_string"]) > settings.max_url_bytes:
            raise UriTooLong()
        host: bytes | None = None
        size = 0
        for name, value in headers:
            size += len(name) + len(value) + 4  # ": " and CRLF, as on the wire
            if name == b"host":
                if host is not None:  # RFC 9110 §7.2: exactly one Host
                    raise MalformedRequest()
                host = value
        if size > settings.max_header_bytes:
            raise HeadersTooLarge()
        try:
            self._hosts.check(host)
        except MissingHost:
            raise MalformedRequest() from None
        except HostNotAllowed:
            raise MisdirectedRequest() from None
        try:
            return routing.resolve(scope["method"], scope["path"])
        except routing.MalformedPath:
            raise MalformedRequest() from None
        except routing.NotRouted:
            raise NotFound() from None

    async def _forward(self, scope: Scope, receive: Receive, send: Send, route: routing.Route,
                       client: forwarded.Client, headers: list[tuple[bytes, bytes]]) -> None:
        settings = self._settings
        declared: int | None = None
        chunked = False
        content_type: bytes | None = None
        authorization: bytes | None = None
        for name, value in headers:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise MalformedRequest() from None
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"content-type":
                content_type = value
            elif name == b"authorization":
                authorization = value
        if declared is not None and chunked:
            # RFC 9112 §6.3: both framings at once is a request-smuggling attempt.
            raise MalformedRequest()
        if declared is not None and declared > settings.max_body_bytes:
            raise PayloadTooLarge()
        reader = RequestBody(receive, max_bytes=settings.max_body_bytes)
        body: RequestBody | bytes | None = reader if (declared or chunked) else None

        if route.rate_class is not None:
            buckets: list[Bucket] = []
            if route.rate_class == "login" and settings.rate_login_per_ip:
                buckets.append(Bucket("login_ip", client.ip, settings.rate_login_per_ip))
            if route.rate_class == "token":
                if settings.rate_token_per_ip:
                    buckets.append(Bucket("token_ip", client.ip, settings.rate_token_per_ip))
                if settings.rate_token_per_client:
                    # The body is read here, once, and forwarded from memory (it is small).
                    if body is not None:
                        body = await reader.read_all()
                    client_id = client_identity.claimed_client_id(
                        authorization, content_type, body or b"")
                    if client_id is not None:
                        buckets.append(Bucket("token_client", client_id,
                                              settings.rate_token_per_client))
            assert self._limiter is not None
            decision = await self._limiter.take(buckets)
            if not decision.allowed:
                raise TooManyRequests(decision.retry_after)

        upstream_headers = hop_by_hop.strip(headers, also=forwarded.REPLACED | {b"x-request-id"})
        upstream_headers += [
            (b"x-forwarded-for", client.forwarded_for()),
            (b"x-forwarded-proto", client.proto.encode()),
            (b"x-request-id", request_id_var.get().encode()),
        ]
        for name, value in headers:
            if name == b"host":
                upstream_headers.append((b"x-forwarded-host", value))
        target = scope["raw_path"]
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        await self._upstreams.forward(route.upstream, method=scope["method"], target=target,
                                      headers=upstream_headers, body=body, send=send)


def create_app(settings: GatewaySettings, readiness: Readiness | None = None) -> ASGIApp:
    """The public app (the proxy), with request ids and access logs."""
    readiness = readiness or Readiness()
    return RequestContextMiddleware(GatewayApp(settings, readiness), service="gateway")


def create_admin_app(readiness: Readiness) -> ASGIApp:
    """The internal app: ``/healthz``, ``/readyz`` and ``/metrics``."""
    app = Starlette(routes=health_routes(readiness))
    app.add_middleware(RequestContextMiddleware, service="gateway-admin")
    return app

"""Wiring of the gateway: the public proxy app and the internal admin app.

The public app is bare ASGI (every request goes through it, so it adds as little as it can);
for each request, in order: size limits (414, 431), ``Host`` (400, 421), the routing table
(400, 404), framing and the route's body cap (400, 413), the client address's requests in
flight (429), rate limits (429), the body read whole within its deadline (408, 413), then the
upstream. The gateway never parses a body: limits are charged to the party that is known — the
client address always, and the client itself only in the token service, once it has
authenticated it (DESIGN §9). A token-service answer saying client authentication failed is
charged to the client address afterwards.

Every answer, the upstream's or the gateway's own, carries ``X-Request-ID``,
``X-Content-Type-Options: nosniff`` and, when the client's connection is HTTPS,
``Strict-Transport-Security`` (RFC 6797 §7.2: "An HSTS Host MUST NOT include the STS header
field in HTTP responses conveyed over non-secure transport"). Internal fields (``x-otesse-…``)
never pass the gateway, in either direction.

The limits that apply before a request exists — connections, per peer and in all, and the time
to send the headers — are the server's (:func:`connection_limits`, enforced by
:mod:`services.common.serve`).

``/healthz``, ``/readyz`` and ``/metrics`` are served by the admin app, on its own port which no
Service or Ingress exposes publicly; on the public port those paths are 404.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Protocol

from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.connection_limits import MAX_LINGERING, ConnectionLimits
from services.common.deadlines import Deadlines
from services.common.http import Readiness, RequestContextMiddleware, health_routes
from services.common.ratelimit import Bucket, RateLimiter
from services.common.redis_client import create_rate_limit_redis
from services.common.redis_lean import LeanRedis
from services.common.serve import raise_open_files_limit
from services.gateway import forwarded, hop_by_hop, routing
from services.gateway.body import BodyBudget, ClientDisconnected, RequestBody
from services.gateway.errors import (
    ConnectionNamesEndToEnd,
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
from services.gateway.in_flight import InFlight
from services.gateway.in_process import InProcessUpstreams
from services.gateway.metrics import RATE_LIMIT_FAIL_OPEN, RATE_LIMITED
from services.gateway.proxy import Forwarded, UpstreamOptions, Upstreams, upstream_headers
from services.gateway.settings import GatewaySettings

log = logging.getLogger("otesse.gateway")

NOSNIFF = (b"x-content-type-options", b"nosniff")
# Fields the gateway reads or writes for the upstreams: a client may not have them stripped.
END_TO_END = frozenset({b"host", b"content-length", b"x-request-id"}) | forwarded.REPLACED


class Forwarder(Protocol):
    """Where routed requests go: :class:`Upstreams` (over HTTP) or
    :class:`~services.gateway.in_process.InProcessUpstreams` (an app in this process)."""

    @property
    def is_open(self) -> bool: ...

    def open(self) -> None: ...

    async def close(self) -> None: ...

    async def forward(self, name: routing.Upstream, *, method: str, target: bytes,
                      headers: list[tuple[bytes, bytes]], body: bytes | None, send: Send,
                      client: forwarded.Client, scope: Scope) -> Forwarded:
        """Sends the request to ``name`` and its answer to ``send``; ``headers`` are as
        :func:`~services.gateway.proxy.upstream_headers` makes them (the client's internal and
        forwarded fields never reach an upstream)."""


class GatewayApp:
    """The public ASGI app: checks, rate limits and forwarding.

    ``upstreams``: where requests go (default: the authorize and token services over HTTP, at
    the settings' URLs); ``serves``: the upstreams this edge routes to, any other route being
    404 (the token service's own edge serves only its paths).
    """

    def __init__(self, settings: GatewaySettings, readiness: Readiness, *,
                 upstreams: Forwarder | None = None,
                 serves: frozenset[routing.Upstream] = frozenset({"authorize", "token"}),
                 ) -> None:
        self._settings = settings
        self._readiness = readiness
        self._hosts = HostAllowList.of(settings.allowed_hosts)
        # The timeouts every request's path keeps: its body's and its upstream's.
        self._deadlines = Deadlines()
        self._upstreams: Forwarder = upstreams or Upstreams(
            {"authorize": settings.authorize_url, "token": settings.token_url},
            UpstreamOptions(connect_timeout=settings.connect_timeout,
                            timeout=settings.upstream_timeout,
                            max_connections=settings.upstream_max_connections),
            self._deadlines)
        self._serves = serves
        self._redis: LeanRedis | None = None
        self._limiter: RateLimiter | None = None
        self._in_flight = InFlight(settings.max_requests_per_ip)
        self._uploads = BodyBudget(settings.upload_buffer_bytes)
        self._body_caps: dict[routing.BodyClass, int] = {
            "token": settings.max_token_body_bytes, "form": settings.max_form_body_bytes,
            "upload": settings.max_upload_body_bytes}
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
        self._redis = create_rate_limit_redis(self._settings.stores)
        self._limiter = RateLimiter(self._redis, prefix=self._settings.stores.redis_prefix,
                                    service="gateway", timeout=self._settings.rate_redis_timeout,
                                    limited=RATE_LIMITED, failed_open=RATE_LIMIT_FAIL_OPEN)

        async def proxy_open() -> None:
            if not self._upstreams.is_open:
                raise RuntimeError("upstream clients are not open")

        # Redis is not a readiness check: without it the gateway still serves (fails open).
        self._readiness.checks["proxy"] = proxy_open
        where = ({"authorize": self._settings.authorize_url, "token": self._settings.token_url}
                 if isinstance(self._upstreams, Upstreams)
                 else {"in_process": sorted(self._serves)})
        log.info("gateway serving", extra=where)

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
            route = routing.resolve(scope["method"], scope["path"])
        except routing.MalformedPath:
            raise MalformedRequest() from None
        except routing.NotRouted:
            raise NotFound() from None
        if route.upstream not in self._serves:
            raise NotFound()
        return route

    async def _forward(self, scope: Scope, receive: Receive, send: Send, route: routing.Route,
                       client: forwarded.Client, headers: list[tuple[bytes, bytes]]) -> None:
        cap = self._body_caps[route.body]
        declared: int | None = None
        chunked = False
        for name, value in headers:
            if name == b"content-length":
                if not value.isdigit():
                    raise MalformedRequest()
                declared = int(value)
            elif name == b"transfer-encoding":
                chunked = True
        if declared is not None and chunked:
            # RFC 9112 §6.3: both framings at once is a request-smuggling attempt.
            raise MalformedRequest()
        if declared is not None and declared > cap:
            # Refused before a byte of it is read (a client sending Expect: 100-continue
            # learns it before sending any).
            raise PayloadTooLarge()
        # RFC 9110 §7.6.1: "A sender MUST NOT send a connection option corresponding to a
        # field that is intended for all recipients of the content". Honouring one that names
        # Host would leave the upstream to guess it, and build URLs from its own address.
        if hop_by_hop.connection_options(headers) & END_TO_END:
            raise ConnectionNamesEndToEnd()

        with self._in_flight.hold(client.ip):
            await self._check_rates(route, client)
            reader = RequestBody(receive, max_bytes=cap,
                                 budget=self._uploads if route.body == "upload" else None)
            try:
                body = (await reader.read(timeout=self._settings.body_timeout,
                                          deadlines=self._deadlines)
                        if declared or chunked else None)
                answer = await self._upstreams.forward(
                    route.upstream, method=scope["method"], target=self._target(scope),
                    headers=upstream_headers(headers, client), body=body, send=send,
                    client=client, scope=scope)
            finally:
                reader.release()
        if answer.client_auth_failed:
            await self._charge_client_auth_failure(client)

    async def _check_rates(self, route: routing.Route, client: forwarded.Client) -> None:
        """One round trip to Redis for every limit of the route, before the body is read."""
        settings = self._settings
        buckets: list[Bucket] = []
        if route.rate_class == "login" and settings.rate_login_per_ip:
            buckets.append(Bucket("login_ip", client.ip, settings.rate_login_per_ip))
        if route.rate_class == "token" and settings.rate_token_per_ip:
            buckets.append(Bucket("token_ip", client.ip, settings.rate_token_per_ip))
        if route.rate_class in ("token", "client_auth") and (
                settings.rate_client_auth_failures_per_ip):
            # Checked only: it is charged when the token service says authentication failed.
            buckets.append(Bucket("client_auth_failures_ip", client.ip,
                                  settings.rate_client_auth_failures_per_ip, take=False))
        if not buckets:
            return
        assert self._limiter is not None
        decision = await self._limiter.take(buckets)
        if not decision.allowed:
            raise TooManyRequests(decision.retry_after)

    async def _charge_client_auth_failure(self, client: forwarded.Client) -> None:
        limit = self._settings.rate_client_auth_failures_per_ip
        if limit is not None and self._limiter is not None:
            # The answer is already sent; an empty bucket refuses the next request.
            await self._limiter.take([Bucket("client_auth_failures_ip", client.ip, limit)])

    @staticmethod
    def _target(scope: Scope) -> bytes:
        target: bytes = scope["raw_path"]
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        return target

# Descriptors that are not client connections: listeners, Redis, logs, the admin port's own.
_OTHER_FILES = 64


def connection_cap(settings: GatewaySettings, open_files: int, *, upstream_pools: int) -> int:
    """The connection cap the process can honour with ``open_files`` descriptors, keeping room
    for ``upstream_pools`` pools of upstream connections."""
    room = (open_files - _OTHER_FILES - MAX_LINGERING
            - upstream_pools * settings.upstream_max_connections)
    return max(1, min(settings.max_connections, room))


def fitted_connection_limits(settings: GatewaySettings, *, upstream_pools: int,
                             ) -> ConnectionLimits:
    """:func:`connection_limits`, with the limit on open files raised to the hard limit and the
    connection cap kept below it with room for ``upstream_pools`` upstream pools, Redis, the
    listeners and refusals still lingering: a cap the process cannot honour is lowered (and the
    log says so), so a flood of connections is refused with a clear answer rather than running
    out of descriptors."""
    open_files = raise_open_files_limit()
    limits = connection_limits(settings)
    cap = connection_cap(settings, open_files, upstream_pools=upstream_pools)
    if cap < settings.max_connections:
        log.warning("connection cap lowered to fit the open-files limit", extra={
            "max_connections": cap, "configured": settings.max_connections,
            "open_files": open_files})
        limits = dataclasses.replace(limits, max_connections=cap)
    return limits


def connection_limits(settings: GatewaySettings) -> ConnectionLimits:
    """What the server lets clients hold before any request reaches the app."""
    return ConnectionLimits(
        # Headers up to a few times the cap reach the app, which answers 431 as a page or
        # JSON by path; beyond that they are refused while still arriving, never held whole.
        max_header_bytes=4 * settings.max_header_bytes,
        header_timeout=settings.header_timeout,
        max_connections=settings.max_connections,
        max_connections_per_ip=settings.max_connections_per_ip,
        # The load balancer speaks for many clients: it is limited per request, by client.
        unlimited_peers=settings.trusted_proxies)


def create_app(settings: GatewaySettings, readiness: Readiness | None = None) -> ASGIApp:
    """The public app (the proxy), with request ids and access logs."""
    readiness = readiness or Readiness()
    return RequestContextMiddleware(GatewayApp(settings, readiness), service="gateway")


def create_edge_app(settings: GatewaySettings, readiness: Readiness,
                    apps: Mapping[routing.Upstream, ASGIApp], *, service: str) -> ASGIApp:
    """The edge in front of ``apps`` served in this process (the token service's public
    listener): the gateway's checks, then the app, with no HTTP hop between them; the other
    routes are 404."""
    gateway = GatewayApp(settings, readiness, upstreams=InProcessUpstreams(apps),
                         serves=frozenset(apps))
    return RequestContextMiddleware(gateway, service=service)


def create_admin_app(readiness: Readiness) -> ASGIApp:
    """The internal app: ``/healthz``, ``/readyz`` and ``/metrics``."""
    app = Starlette(routes=health_routes(readiness))
    app.add_middleware(RequestContextMiddleware, service="gateway-admin")
    return app

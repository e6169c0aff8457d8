"""Forwarding one request to an upstream and its answer back, streaming both bodies.

One pooled keep-alive ``httpx.AsyncClient`` per upstream, opened in the lifespan. Bodies are
streamed chunk by chunk in both directions, so memory per request stays small whatever the size
(the request body is counted against the cap as it arrives). Upstream keep-alive connections are
dropped after 4 s idle, before uvicorn's 5 s on the other side closes them, so a request never
lands on a connection that is being closed.

What can go wrong, and what the client gets:

* the upstream refuses connections or the pool is exhausted → ``503`` (it is down or busy);
* the upstream resets the connection or answers garbage → ``502``;
* no response headers within the upstream timeout → ``504`` — or ``408`` when it was the client
  that had not finished sending its body;
* the upstream breaks off mid-body → the client's connection is closed without a clean end, so
  the client sees a truncated response rather than a complete-looking one.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from starlette.types import Message, Receive, Send

from services.gateway import hop_by_hop
from services.gateway.errors import (
    BadGateway,
    GatewayError,
    GatewayTimeout,
    PayloadTooLarge,
    RequestTimeout,
    UpstreamUnavailable,
)
from services.gateway.metrics import UPSTREAM_ERRORS
from services.gateway.routing import Upstream

log = logging.getLogger("otesse.gateway.proxy")

# Response headers the gateway sets itself (the request id, security headers, the date).
OWN_RESPONSE_HEADERS = frozenset({b"x-request-id", b"date", b"server",
                                  b"strict-transport-security", b"x-content-type-options"})
_KEEPALIVE_EXPIRY = 4.0


class ClientDisconnected(Exception):
    """The client went away before its request was complete; nothing is answered."""


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    # The pooled client is shared by every user: it must never keep anyone's cookies.
    def set_ok(self, cookie: http.cookiejar.Cookie, request: object) -> bool:
        return False


class RequestBody:
    """The client's request body, read from ASGI ``receive`` at most once and capped."""

    def __init__(self, receive: Receive, *, max_bytes: int) -> None:
        self._receive = receive
        self._max_bytes = max_bytes
        self.received = 0
        self.complete = False

    async def _next(self) -> bytes:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected()
        chunk: bytes = message.get("body", b"")
        self.received += len(chunk)
        if self.received > self._max_bytes:
            raise PayloadTooLarge()
        if not message.get("more_body", False):
            self.complete = True
        return chunk

    async def chunks(self) -> AsyncIterator[bytes]:
        while not self.complete:
            chunk = await self._next()
            if chunk:
                yield chunk

    async def read_all(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])


@dataclass(frozen=True)
class UpstreamOptions:
    connect_timeout: float
    timeout: float
    max_connections: int


class Upstreams:
    """The pooled HTTP clients, one per upstream service."""

    def __init__(self, urls: dict[Upstream, str], options: UpstreamOptions) -> None:
        self._urls = {name: httpx.URL(url) for name, url in urls.items()}
        self._options = options
        self._clients: dict[Upstream, httpx.AsyncClient] = {}

    @property
    def is_open(self) -> bool:
        return bool(self._clients)

    def open(self) -> None:
        options = self._options
        for name in self._urls:
            self._clients[name] = httpx.AsyncClient(
                timeout=httpx.Timeout(options.timeout, connect=options.connect_timeout,
                                      pool=options.connect_timeout),
                limits=httpx.Limits(max_connections=options.max_connections,
                                    max_keepalive_connections=options.max_connections,
                                    keepalive_expiry=_KEEPALIVE_EXPIRY),
                cookies=http.cookiejar.CookieJar(policy=_NoCookies()),
                follow_redirects=False,
                trust_env=False,
            )

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()

    def url(self, name: Upstream, raw_target: bytes) -> httpx.URL:
        return self._urls[name].copy_with(raw_path=raw_target)

    async def forward(self, name: Upstream, *, method: str, target: bytes,
                      headers: list[tuple[bytes, bytes]], body: RequestBody | bytes | None,
                      send: Send) -> int:
        """Sends the request upstream and streams the answer to ``send``; returns the status.

        Raises a :class:`GatewayError` (before anything is sent) when there is no answer.
        """
        content: bytes | AsyncIterator[bytes] | None
        content = body.chunks() if isinstance(body, RequestBody) else body
        request = httpx.Request(method, self.url(name, target), headers=headers, content=content)
        client = self._clients[name]
        try:
            async with asyncio.timeout(self._options.timeout):
                response = await client.send(request, stream=True)
        except GatewayError:
            raise
        except TimeoutError:
            if isinstance(body, RequestBody) and not body.complete:
                raise RequestTimeout() from None
            raise self._failed(name, "timeout", GatewayTimeout()) from None
        except httpx.TimeoutException as exc:
            if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)):
                raise self._failed(name, "unavailable", UpstreamUnavailable()) from None
            raise self._failed(name, "timeout", GatewayTimeout()) from None
        except httpx.ConnectError:
            raise self._failed(name, "unavailable", UpstreamUnavailable()) from None
        except httpx.TransportError as exc:
            raise self._failed(name, "bad_response", BadGateway(), exc) from None
        try:
            await self._relay(name, response, send)
        finally:
            await response.aclose()
        return response.status_code

    async def _relay(self, name: Upstream, response: httpx.Response, send: Send) -> None:
        headers = hop_by_hop.strip(
            ((key.lower(), value) for key, value in response.headers.raw),
            also=OWN_RESPONSE_HEADERS)
        start: Message = {"type": "http.response.start", "status": response.status_code,
                          "headers": headers}
        await send(start)
        try:
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except httpx.TransportError as exc:
            # Ending the body now would make a truncated answer look complete: leave it
            # unfinished, so the server closes the connection instead.
            self._failed(name, "broken_body", BadGateway(), exc)
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    def _failed(name: Upstream, kind: str, error: GatewayError,
                exc: Exception | None = None) -> GatewayError:
        UPSTREAM_ERRORS.labels(name, kind).inc()
        log.warning("upstream %s", kind, extra={"upstream": name,
                                                 "error": type(exc).__name__ if exc else kind})
        return error

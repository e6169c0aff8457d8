"""Forwarding one request to an upstream and its answer back, streaming both bodies.

One keep-alive connection pool per upstream (:mod:`services.gateway.upstream_client`), opened in
the lifespan. Bodies are streamed chunk by chunk in both directions, so memory per request stays
small whatever the size (the request body is counted against the cap as it arrives). Upstream
keep-alive connections are dropped after 4 s idle, before uvicorn's 5 s on the other side closes
them, so a request never lands on a connection that is being closed (and one that raced a close
anyway is retried once when its body is in memory).

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
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

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
from services.gateway.upstream_client import (
    BadResponse,
    BrokenBody,
    ConnectFailed,
    Response,
    UpstreamPool,
)

log = logging.getLogger("otesse.gateway.proxy")

# Response headers the gateway sets itself (the request id, security headers, the date).
OWN_RESPONSE_HEADERS = frozenset({b"x-request-id", b"date", b"server",
                                  b"strict-transport-security", b"x-content-type-options"})


# How long the rest of an oversized body may keep arriving before the 413 is sent anyway.
_LINGER_SECONDS = 1.0


class ClientDisconnected(Exception):
    """The client went away before its request was complete; nothing is answered."""


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
        if not message.get("more_body", False):
            self.complete = True
        if self.received > self._max_bytes:
            await self._linger()
            raise PayloadTooLarge()
        return chunk

    async def _linger(self) -> None:
        # RFC 9112 §9.6: "If the server receives additional data from the client on a fully
        # closed connection, [...] the server's TCP stack will send a reset packet to the
        # client; unfortunately, the reset packet might erase the client's unacknowledged
        # input buffers before they can be read". The 413 closes the connection, so the rest
        # of a body still arriving is read and dropped first — a bounded amount, briefly.
        budget = self._max_bytes
        try:
            async with asyncio.timeout(_LINGER_SECONDS):
                while not self.complete and budget > 0:
                    message = await self._receive()
                    if message["type"] == "http.disconnect":
                        return
                    budget -= len(message.get("body", b""))
                    self.complete = not message.get("more_body", False)
        except TimeoutError:
            pass

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
    """The connection pools, one per upstream service. They keep no cookies: nothing is
    shared between the users whose requests pass through them but the connections."""

    def __init__(self, urls: dict[Upstream, str], options: UpstreamOptions) -> None:
        self._urls = urls
        self._options = options
        self._pools: dict[Upstream, UpstreamPool] = {}

    @property
    def is_open(self) -> bool:
        return bool(self._pools)

    def open(self) -> None:
        options = self._options
        for name, url in self._urls.items():
            # A body that stalls for the whole upstream timeout is broken off.
            self._pools[name] = UpstreamPool(url, max_connections=options.max_connections,
                                             connect_timeout=options.connect_timeout,
                                             read_timeout=options.timeout)

    async def close(self) -> None:
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            await pool.aclose()

    async def forward(self, name: Upstream, *, method: str, target: bytes,
                      headers: list[tuple[bytes, bytes]], body: RequestBody | bytes | None,
                      send: Send) -> int:
        """Sends the request upstream and streams the answer to ``send``; returns the status.

        Raises a :class:`GatewayError` (before anything is sent) when there is no answer.
        """
        content = body.chunks() if isinstance(body, RequestBody) else body
        pool = self._pools[name]
        try:
            async with asyncio.timeout(self._options.timeout):
                response = await pool.request(method, target, headers, content)
        except GatewayError:
            raise
        except TimeoutError:
            if isinstance(body, RequestBody) and not body.complete:
                raise RequestTimeout() from None
            raise self._failed(name, "timeout", GatewayTimeout()) from None
        except ConnectFailed as exc:
            raise self._failed(name, "unavailable", UpstreamUnavailable(), exc) from None
        except BadResponse as exc:
            raise self._failed(name, "bad_response", BadGateway(), exc) from None
        try:
            await self._relay(name, response, send)
        finally:
            response.close()
        return response.status

    async def _relay(self, name: Upstream, response: Response, send: Send) -> None:
        headers = hop_by_hop.strip(response.headers, also=OWN_RESPONSE_HEADERS)
        start: Message = {"type": "http.response.start", "status": response.status,
                          "headers": headers}
        await send(start)
        more = True
        try:
            while more:
                chunk, more = await response.read()
                if chunk or not more:
                    await send({"type": "http.response.body", "body": chunk,
                                "more_body": more})
        except BrokenBody as exc:
            # Ending the body now would make a truncated answer look complete: leave it
            # unfinished, so the server closes the connection instead.
            self._failed(name, "broken_body", BadGateway(), exc)

    @staticmethod
    def _failed(name: Upstream, kind: str, error: GatewayError,
                exc: Exception | None = None) -> GatewayError:
        UPSTREAM_ERRORS.labels(name, kind).inc()
        log.warning("upstream %s", kind, extra={"upstream": name,
                                                 "error": type(exc).__name__ if exc else kind})
        return error

"""The client's request body, read whole before any upstream connection is taken (DESIGN §9).

A client that announces a body and sends it slowly, or never, must hold nothing but its own
connection: so the gateway reads the body into memory first — capped by its route (413 as soon
as ``Content-Length`` says it is too large, or as soon as a chunked body passes the cap) and
within a deadline (408 past it) — and only then asks an upstream pool for a connection. Bodies
are small (16 KiB for the token endpoints) except the logo uploads of the app-registration
forms; the bytes those hold at once, all clients together, are bounded by a
:class:`BodyBudget` (503 when it is spent), so no number of uploads can exhaust memory.

Nothing here parses a body: the gateway only counts its bytes.
"""

from __future__ import annotations

import asyncio

from starlette.types import Receive

from services.common.deadlines import Deadlines
from services.gateway.errors import BodyBufferFull, PayloadTooLarge, RequestTimeout

# How long the rest of an oversized body may keep arriving before the 413 is sent anyway.
_LINGER_SECONDS = 1.0


class ClientDisconnected(Exception):
    """The client went away before its request was complete; nothing is answered."""


class BodyBudget:
    """Bytes of request bodies held at once, shared by every request that draws on it."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self.held = 0

    def draw(self, size: int) -> bool:
        if self.held + size > self._limit:
            return False
        self.held += size
        return True

    def give_back(self, size: int) -> None:
        self.held -= size


class RequestBody:
    """Reads one request's body from ASGI ``receive``, at most once, capped at ``max_bytes``.

    With a ``budget``, every byte held is drawn from it as it arrives; :meth:`release` gives
    them back once the body is no longer needed (after the upstream has it).
    """

    def __init__(self, receive: Receive, *, max_bytes: int,
                 budget: BodyBudget | None = None) -> None:
        self._receive = receive
        self._max_bytes = max_bytes
        self._budget = budget
        self._drawn = 0
        self.received = 0
        self.complete = False

    async def read(self, *, timeout: float, deadlines: Deadlines) -> bytes:
        """The whole body; raises 413, 408 (too slow: ``timeout`` seconds, kept by
        ``deadlines``) or 503 (the budget is spent)."""
        chunks: list[bytes] = []
        try:
            async with deadlines.within(timeout):
                while not self.complete:
                    chunk = await self._next()
                    if chunk:
                        chunks.append(chunk)
        except TimeoutError:
            raise RequestTimeout() from None
        return b"".join(chunks)

    def release(self) -> None:
        if self._budget is not None and self._drawn:
            self._budget.give_back(self._drawn)
            self._drawn = 0

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
        if self._budget is not None and chunk:
            if not self._budget.draw(len(chunk)):
                raise BodyBufferFull()
            self._drawn += len(chunk)
        return chunk

    async def _linger(self) -> None:
        # RFC 9112 §9.6: "If the server receives additional data from the client on a fully
        # closed connection, [...] the server's TCP stack will send a reset packet to the
        # client; unfortunately, the reset packet might erase the client's unacknowledged
        # input buffers before they can be read". The 413 closes the connection, so the rest
        # of a body still arriving is dropped as it comes first — a bounded amount (never held,
        # never parsed), briefly.
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

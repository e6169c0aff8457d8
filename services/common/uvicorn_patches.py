"""Every patch of uvicorn's internals, in one place, pinned to the locked uvicorn.

uvicorn has no public hooks for what the services need, so three classes lean on its private
API:

* :func:`limited_protocol` subclasses ``HttpToolsProtocol`` to enforce
  :class:`~services.common.connection_limits.ConnectionLimits`: it overrides
  ``connection_made``, ``connection_lost``, ``data_received``, ``eof_received``,
  ``on_message_begin``, ``on_url``, ``on_header``, ``on_headers_complete`` and
  ``send_400_response``, assumes what ``on_response_complete`` and ``shutdown`` do, and reads
  the ``transport``, ``client``, ``connections``, ``cycle`` and ``loop`` attributes
  ``__init__`` sets, and the cycle's ``keep_alive`` and ``response_complete``;
* :class:`DrainingServer` replaces ``Server.handle_exit`` (uvicorn's re-raises the signal after
  a graceful stop) and extends ``Server.on_tick`` (the drain deadline), setting
  ``should_exit`` / ``force_exit``;
* :class:`SignalFreeServer` replaces ``Server.capture_signals`` with nothing: a second server
  in the process (the gateway's admin port) must not take the signals the main one acts on.

``UVICORN_VERSION`` is the version these were written against, the one ``requirements.lock``
pins; ``tests/common/test_uvicorn_patches.py`` fails loudly when the installed uvicorn is another
one or when the source of any function relied on above changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import time
from collections.abc import Iterator
from types import FrameType

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from services.common.connection_limits import (
    ADDRESS_FULL,
    HEADERS_TOO_LARGE,
    HEADERS_TOO_SLOW,
    LINGER_SECONDS,
    MAX_LINGERING,
    SERVER_FULL,
    ConnectionLimits,
)
from services.common.http import Readiness
from services.common.metrics import CONNECTIONS_REFUSED

UVICORN_VERSION = "0.54.0"

log = logging.getLogger("otesse.serve")


class _HeaderCap(Exception):
    """The request line and headers passed the cap while still arriving."""


class _Lingering:
    """How many refused connections of one server are lingering."""

    count = 0



def limited_protocol(limits: ConnectionLimits) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with ``limits``; one class per server (it counts its own
    connections)."""
    per_ip: dict[str, int] = {}
    lingering = _Lingering()

    @functools.lru_cache(maxsize=4096)
    def limited(peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return True
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return not any(address in network for network in limits.unlimited_peers)

    class LimitedProtocol(HttpToolsProtocol):
        _header_bytes = 0
        _over_cap = False
        _refusing = False
        # Bytes of the current request have arrived and its headers are not complete.
        _in_headers = False
        _counted_peer: str | None = None
        _header_timer: asyncio.TimerHandle | None = None
        _linger: asyncio.TimerHandle | None = None

        # -- connections ---------------------------------------------------------------------
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if limits.max_connections is not None and (
                    len(self.connections) > limits.max_connections):
                self._refuse(SERVER_FULL, "connections")
                return
            peer = self.client[0] if self.client else None
            if peer is not None and limits.max_connections_per_ip is not None and limited(peer):
                held = per_ip.get(peer, 0)
                if held >= limits.max_connections_per_ip:
                    self._refuse(ADDRESS_FULL, "connections_per_ip")
                    return
                per_ip[peer] = held + 1
                self._counted_peer = peer
            # The idle time before the first byte counts against the first request's headers.
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._linger is not None:
                self._linger.cancel()
                self._linger = None
                lingering.count -= 1
            peer, self._counted_peer = self._counted_peer, None
            if peer is not None:
                left = per_ip[peer] - 1
                if left:
                    per_ip[peer] = left
                else:
                    del per_ip[peer]
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refusing:
                return  # answered already: what else arrives is dropped unread
            super().data_received(data)

        def eof_received(self) -> None:
            if self._refusing:
                # The client read the answer and closed its side: nothing more to wait for.
                self.transport.close()
                return
            super().eof_received()

        # -- the header deadline -------------------------------------------------------------
        def _arm(self) -> None:
            if limits.header_timeout is not None and self._header_timer is None:
                self._header_timer = self.loop.call_later(limits.header_timeout,
                                                          self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.transport.is_closing():
                return
            if self._in_headers:
                self._refuse(HEADERS_TOO_SLOW, "header_timeout")
            elif self.cycle is None or self.cycle.response_complete:
                CONNECTIONS_REFUSED.labels("header_timeout").inc()
                self.transport.close()  # nothing was asked: nothing to answer

        # -- the header cap (and the deadline's start and end) -------------------------------
        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._header_bytes = 0
            self._in_headers = True
            # The first request's deadline started with the connection; a later one's starts
            # with its first byte.
            self._arm()

        def _count(self, size: int) -> None:
            self._header_bytes += size
            if limits.max_header_bytes is not None and (
                    self._header_bytes > limits.max_header_bytes):
                self._over_cap = True
                raise _HeaderCap()

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 4)  # ": " and CRLF, as on the wire
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_headers = False
            self._disarm()
            super().on_headers_complete()

        def send_400_response(self, msg: str) -> None:
            if not self._over_cap:
                super().send_400_response(msg)
                return
            self._refuse(HEADERS_TOO_LARGE, "header_bytes")

        # -- refusing --------------------------------------------------------------------------
        def _refuse(self, answer: bytes, limit: str) -> None:
            """Answers ``answer`` and closes: at once, or after the response in progress."""
            CONNECTIONS_REFUSED.labels(limit).inc()
            self._disarm()
            self._refusing = True
            if self.cycle is not None and not self.cycle.response_complete:
                # A pipelined request is the one refused: finish the answer in progress, then
                # close instead of reading the next request.
                self.cycle.keep_alive = False
                return
            transport = self.transport
            transport.write(answer)
            if lingering.count >= MAX_LINGERING or not transport.can_write_eof():
                transport.close()
                return
            # RFC 9112 §9.6: closing with the client's request unread would send a reset that
            # "might erase the client's unacknowledged input buffers before they can be read" —
            # the answer. Half-close instead, drop what arrives, and close when the client does
            # (or after a short linger).
            transport.write_eof()
            self._linger = self.loop.call_later(LINGER_SECONDS, transport.close)
            lingering.count += 1

    return LimitedProtocol


class DrainingServer(uvicorn.Server):
    """Drains before stopping (see :mod:`services.common.serve`): its own signal handler, and
    the drain deadline checked on uvicorn's tick."""

    def __init__(self, config: uvicorn.Config, readiness: Readiness, drain_seconds: float) -> None:
        super().__init__(config)
        self._readiness = readiness
        self._drain_seconds = drain_seconds
        self._drain_deadline: float | None = None
        self._drain_announced = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not uvicorn's handler: it re-raises the signal after a graceful stop, so a clean
        # shutdown would exit with -15 (and Ctrl-C with a traceback) instead of 0.
        self._readiness.draining = True
        if self.should_exit:
            self.force_exit = True
        elif self._drain_deadline is None and self._drain_seconds > 0:
            self._drain_deadline = time.monotonic() + self._drain_seconds
        else:
            self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        # Ticks run on the event loop every 0.1 s, where the async hooks can; the signal
        # handler above cannot await.
        if self._readiness.draining and not self._drain_announced:
            self._drain_announced = True
            await self._announce_drain()
        if self._drain_deadline is not None and time.monotonic() >= self._drain_deadline:
            return True
        return bool(await super().on_tick(counter))

    async def _announce_drain(self) -> None:
        log.info("draining", extra={"drain_seconds": self._drain_seconds})
        for hook in self._readiness.on_drain:
            try:
                await hook()
            except Exception:  # noqa: BLE001 - one failed hook must not stop the drain
                log.exception("drain hook failed")



class SignalFreeServer(uvicorn.Server):
    """A server that leaves the process's signals alone: another server decides when to stop
    and sets ``should_exit`` on this one."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

"""Forwarding one request to an upstream and its answer back.

One keep-alive connection pool per upstream (:mod:`services.gateway.upstream_client`), opened in
the lifespan. The request body arrives here whole, already read from the client
(:mod:`services.gateway.body`), so a pooled connection is held only while the upstream works;
an answer of at most 64 KiB (every token endpoint answer, every page) is read whole before its
head is relayed, a larger one streamed back chunk by chunk, so memory per request stays small
whatever its size. Upstream keep-alive connections are dropped after 4 s idle, before uvicorn's
5 s on the other side closes them, so a request never lands on a connection that is being
closed on purpose (one that meets a close anyway is retried once, on a new connection, only
when it is a GET, HEAD or OPTIONS: an upstream that died under a POST may have acted on it).

Internal header fields (``x-otesse-…``, :mod:`services.common.internal_headers`) never reach the
client: the one the gateway acts on is returned to the caller, with the status.

What can go wrong, and what the client gets:

* the upstream refuses connections or the pool is exhausted → ``503`` (it is down or busy);
* the upstream closes a kept-alive connection before answering, and the request cannot be sent
  again (above) → ``503``: the client decides whether to send it again;
* the upstream resets a new connection or answers garbage, or the exchange breaks otherwise
  (any other :class:`~services.gateway.upstream_client.UpstreamError`) → ``502``;
* no response headers within the upstream timeout → ``504``;
* the upstream breaks off mid-body → ``502`` for an answer read whole (above); for a streamed
  one, whose head is already relayed, the client's connection is closed without a clean end,
  so the client sees a truncated response rather than a complete-looking one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from starlette.types import Message, Scope, Send

from services.common import internal_headers
from services.common.deadlines import Deadlines
from services.common.log import request_id_var
from services.gateway import forwarded, hop_by_hop
from services.gateway.errors import (
    BadGateway,
    GatewayError,
    GatewayTimeout,
    UpstreamUnavailable,
)
from services.gateway.metrics import UPSTREAM_ERRORS
from services.gateway.routing import Upstream
from services.gateway.upstream_client import (
    BadResponse,
    BrokenBody,
    ConnectFailed,
    NoAnswer,
    Response,
    UpstreamError,
    UpstreamPool,
)

log = logging.getLogger("otesse.gateway.proxy")

# Response headers the gateway sets itself (the request id, security headers, the date).
OWN_RESPONSE_HEADERS = frozenset({b"x-request-id", b"date", b"server",
                                  b"strict-transport-security", b"x-content-type-options"})
# An answer whose Content-Length is at most this is read whole before its head is relayed: an
# upstream that dies mid-answer (a killed replica) is then a clean 502, not a connection the
# client sees cut after a 200. Every token endpoint answer and every page is far below it.
WHOLE_ANSWER_BYTES = 64 * 1024
_CLIENT_AUTH = internal_headers.CLIENT_AUTH.encode()
_FAILED = internal_headers.CLIENT_AUTH_FAILED.encode()


@dataclass(frozen=True)
class Forwarded:
    """What came back: the status, and whether the token service says the client failed to
    authenticate (``x-otesse-client-auth: failed``)."""

    status: int
    client_auth_failed: bool = False


@dataclass(frozen=True)
class UpstreamOptions:
    connect_timeout: float
    timeout: float
    max_connections: int


class Upstreams:
    """The connection pools, one per upstream service. They keep no cookies: nothing is
    shared between the users whose requests pass through them but the connections."""

    def __init__(self, urls: dict[Upstream, str], options: UpstreamOptions,
                 deadlines: Deadlines) -> None:
        self._urls = urls
        self._options = options
        # Keeps the bound on each request until the upstream's answer begins.
        self._deadlines = deadlines
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
                      headers: list[tuple[bytes, bytes]], body: bytes | None, send: Send,
                      client: forwarded.Client, scope: Scope) -> Forwarded:
        """Sends the request upstream (``headers`` as :func:`upstream_headers` makes them) and
        streams the answer to ``send``. (``client`` and the edge's ``scope`` are for an upstream
        in this process, :class:`~services.gateway.in_process.InProcessUpstreams`.)

        Raises a :class:`GatewayError` (before anything is sent) when there is no answer.
        """
        pool = self._pools[name]
        try:
            async with self._deadlines.within(self._options.timeout):
                response = await pool.request(method, target, headers, body)
        except TimeoutError:
            raise self._failed(name, "timeout", GatewayTimeout()) from None
        except NoAnswer as exc:
            raise self._failed(name, "no_answer", UpstreamUnavailable(), exc) from None
        except ConnectFailed as exc:
            raise self._failed(name, "unavailable", UpstreamUnavailable(), exc) from None
        except BadResponse as exc:
            raise self._failed(name, "bad_response", BadGateway(), exc) from None
        except UpstreamError as exc:
            # Any other broken exchange (a request body that did not match its length) is
            # the exchange's failure, not the gateway's: 502, never a 500.
            raise self._failed(name, "bad_exchange", BadGateway(), exc) from None
        try:
            failed = await self._relay(name, response, send)
        finally:
            response.close()
        return Forwarded(response.status, client_auth_failed=failed)

    async def _relay(self, name: Upstream, response: Response, send: Send) -> bool:
        """Relays the answer; returns whether it said the client failed to authenticate."""
        failed = False
        headers: list[tuple[bytes, bytes]] = []
        for field, value in hop_by_hop.strip(response.headers, also=OWN_RESPONSE_HEADERS):
            if internal_headers.is_internal(field):
                failed = failed or (field == _CLIENT_AUTH and value == _FAILED)
            else:
                headers.append((field, value))
        start: Message = {"type": "http.response.start", "status": response.status,
                          "headers": headers}
        if _small(response.headers):
            try:
                body = await _read_whole(response)
            except BrokenBody as exc:
                raise self._failed(name, "broken_body", BadGateway(), exc) from None
            await send(start)
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return failed
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
        return failed

    @staticmethod
    def _failed(name: Upstream, kind: str, error: GatewayError,
                exc: Exception | None = None) -> GatewayError:
        UPSTREAM_ERRORS.labels(name, kind).inc()
        log.warning("upstream %s", kind, extra={"upstream": name,
                                                 "error": type(exc).__name__ if exc else kind})
        return error


def upstream_headers(headers: list[tuple[bytes, bytes]], client: forwarded.Client,
                     ) -> list[tuple[bytes, bytes]]:
    """The request's fields as an upstream gets them: hop-by-hop fields and the
    client's internal ones dropped, the client's forwarded fields replaced by the edge's (who
    the client is, over which scheme, under which request id, for which host)."""
    kept = [
        (name, value)
        for name, value in hop_by_hop.strip(headers, also=forwarded.REPLACED | {b"x-request-id"})
        # A client must not speak for a service behind the gateway.
        if not internal_headers.is_internal(name)]
    kept += [
        (b"x-forwarded-for", client.forwarded_for()),
        (b"x-forwarded-proto", client.proto.encode()),
        (b"x-request-id", request_id_var.get().encode()),
    ]
    for name, value in headers:
        if name == b"host":
            kept.append((b"x-forwarded-host", value))
    return kept


def _small(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the answer says it is at most :data:`WHOLE_ANSWER_BYTES` long."""
    for field, value in headers:
        if field == b"content-length":
            return value.isdigit() and int(value) <= WHOLE_ANSWER_BYTES
    return False


async def _read_whole(response: Response) -> bytes:
    chunks = []
    more = True
    while more:
        chunk, more = await response.read()
        chunks.append(chunk)
    return b"".join(chunks)

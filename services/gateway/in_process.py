"""An upstream served in this process: the edge hands the request to the service's ASGI app
instead of sending it over HTTP.

The token service runs the gateway's edge on a public listener of its own
(``OTESSE_TOKEN_EDGE_PORT``, :mod:`services.token.__main__`): the ingress sends the token
service's public paths there, every check of the gateway applies (sizes, ``Host``, routing,
framing and body caps, requests in flight and rate limits per address, the body read whole
within its deadline, request ids, security headers, access lines), and the request then reaches
the token app with no second HTTP hop — which cost about a fifth of a code exchange's CPU
(bench/README.md, "the gateway hop").

The app sees the request the way it sees one the gateway forwards: the same target, the
fields :func:`~services.gateway.proxy.upstream_headers` made at the edge (hop-by-hop and the
client's internal and forwarded fields dropped; the edge's ``X-Forwarded-*`` and ``X-Request-ID`` in
their place, so no client can choose the address the token service records), and as its peer
the client the edge resolved. Its answer is relayed as :class:`~services.gateway.proxy.Upstreams`
relays one: hop-by-hop fields dropped, the edge's own fields (request id, security headers)
replacing any the app set, and internal fields never reaching the client — the one saying
client authentication failed is returned to the edge, which charges it to the address. After
the body, the app's ``receive`` waits until its answer is complete before it reports the end of
the request (``http.disconnect``), as a server does: an answer streamed in parts is never cut.

There is no upstream deadline here: the request is this process's own work, bounded by its
stores' timeouts, and cancelling it half-way through a write would leave the client no better
informed than its answer does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Scope, Send

from services.common import internal_headers
from services.common.http import IN_PROCESS
from services.gateway import forwarded, hop_by_hop
from services.gateway.proxy import OWN_RESPONSE_HEADERS, Forwarded
from services.gateway.routing import Upstream

_CLIENT_AUTH = internal_headers.CLIENT_AUTH.encode()
_FAILED = internal_headers.CLIENT_AUTH_FAILED.encode()
_DISCONNECT: Message = {"type": "http.disconnect"}


class InProcessUpstreams:
    """The upstreams this process serves itself, by name (the interface of
    :class:`~services.gateway.proxy.Upstreams`)."""

    def __init__(self, apps: Mapping[Upstream, ASGIApp]) -> None:
        self._apps = dict(apps)

    @property
    def is_open(self) -> bool:
        return True

    def open(self) -> None:
        """Nothing to open: the apps' own lifespan opens what they use."""

    async def close(self) -> None:
        """Nothing to close (above)."""

    async def forward(self, name: Upstream, *, method: str, target: bytes,
                      headers: list[tuple[bytes, bytes]], body: bytes | None, send: Send,
                      client: forwarded.Client, scope: Scope) -> Forwarded:
        path, _, query = target.partition(b"?")
        app_scope: Scope = {
            "type": "http", "asgi": scope["asgi"], "http_version": scope["http_version"],
            "method": method, "scheme": client.proto, "server": scope.get("server"),
            # The request's own path, decoded as the server decoded it, and the raw one.
            "path": scope["path"], "raw_path": path, "query_string": query,
            "root_path": "", "headers": headers,
            "client": (client.ip, 0),
            "state": {},
            # The edge's middleware writes the access line and the metric: the app's does not.
            IN_PROCESS: True,
        }
        pending: Message | None = {"type": "http.request", "body": body or b"",
                                   "more_body": False}
        answered = asyncio.Event()

        async def receive() -> Message:
            nonlocal pending
            message, pending = pending, None
            if message is None:
                # The body was read whole at the edge: the request ends with its answer.
                await answered.wait()
                return _DISCONNECT
            return message

        status = 500
        failed = False

        async def relay(message: Message) -> None:
            nonlocal status, failed
            if message["type"] == "http.response.start":
                kept: list[tuple[bytes, bytes]] = []
                fields = [(field.lower(), value) for field, value in message.get("headers", ())]
                for field, value in hop_by_hop.strip(fields, also=OWN_RESPONSE_HEADERS):
                    if internal_headers.is_internal(field):
                        failed = failed or (field == _CLIENT_AUTH and value == _FAILED)
                    else:
                        kept.append((field, value))
                status = message["status"]
                message = {**message, "headers": kept}
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                answered.set()
            await send(message)

        try:
            await self._apps[name](app_scope, receive, relay)
        finally:
            answered.set()
        return Forwarded(status, client_auth_failed=failed)

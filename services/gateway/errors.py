"""The gateway's own answers, rendered in one place: JSON for API paths, a page for browsers.

API paths get ``{"error", "error_description"}`` (RFC 6749 §5.2 style) with
``Cache-Control: no-store``. Codes are RFC 6749 ones where one fits (``invalid_request``,
``temporarily_unavailable``); a rate limit is ``too_many_requests`` (RFC 6585 §4 names the
status; OAuth has no code for it, and ``slow_down`` belongs to the device flow's polling).
Browser paths get a small HTML page with the same sentence and nothing else.
"""

from __future__ import annotations

import html
import math
from typing import ClassVar

from starlette.types import Send

from services.common.errors import json_error


class GatewayError(Exception):
    status: ClassVar[int] = 400
    error: ClassVar[str] = "invalid_request"
    title: ClassVar[str] = "Bad request"
    description: ClassVar[str] = "The request is malformed."

    def headers(self) -> list[tuple[bytes, bytes]]:
        return []


class MalformedRequest(GatewayError):
    pass


class ConnectionNamesEndToEnd(MalformedRequest):
    """``Connection`` lists a field the gateway and the upstreams rely on end to end (``Host``,
    ``Content-Length``, the forwarded fields, the request id)."""

    description = "The Connection header names a field this request needs end to end."


class NotFound(GatewayError):
    status = 404
    error = "not_found"
    title = "Not found"
    description = "No such page."


class MisdirectedRequest(GatewayError):
    status = 421
    title = "Misdirected request"
    description = "This server does not serve that host name."


class PayloadTooLarge(GatewayError):
    status = 413
    title = "Request too large"
    description = "The request body is too large."

    def headers(self) -> list[tuple[bytes, bytes]]:
        # The rest of the body is not read: end the connection rather than drain it.
        return [(b"connection", b"close")]


class UriTooLong(GatewayError):
    status = 414
    title = "Address too long"
    description = "The request URL is too long."


class HeadersTooLarge(GatewayError):
    status = 431
    title = "Request headers too large"
    description = "The request header fields are too large."


class RequestTimeout(GatewayError):
    status = 408
    title = "Request timeout"
    description = "The request body did not arrive in time."

    def headers(self) -> list[tuple[bytes, bytes]]:
        # The rest of the body may still be on its way: it is not waited for.
        return [(b"connection", b"close")]


class ServerError(GatewayError):
    """Anything unexpected: no detail for the client, the traceback in the log."""

    status = 500
    error = "server_error"
    title = "Something went wrong"
    description = "The server encountered an unexpected error."


class TooManyRequests(GatewayError):
    status = 429
    error = "too_many_requests"
    title = "Too many attempts"
    description = "Too many requests; retry after the time in the Retry-After header."

    def __init__(self, retry_after: float) -> None:
        super().__init__(retry_after)
        self.retry_after = max(1, math.ceil(retry_after))

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", str(self.retry_after).encode())]


class TooManyInFlight(TooManyRequests):
    """The client's address has as many requests in flight as it may."""

    description = "Too many requests at once from your address; retry shortly."

    def __init__(self) -> None:
        super().__init__(1.0)


class UpstreamUnavailable(GatewayError):
    """The service behind the gateway does not accept connections."""

    status = 503
    error = "temporarily_unavailable"
    title = "Temporarily unavailable"
    description = "The service is temporarily unavailable; retry shortly."

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", b"1")]


class BadGateway(UpstreamUnavailable):
    """The service behind the gateway broke the exchange (reset, malformed response)."""

    status = 502


class BodyBufferFull(UpstreamUnavailable):
    """The bytes of uploads the gateway may hold at once are spent (other uploads arriving)."""

    description = "The server is busy receiving other uploads; retry shortly."

    def headers(self) -> list[tuple[bytes, bytes]]:
        # The rest of this body is not read: end the connection rather than drain it.
        return [*super().headers(), (b"connection", b"close")]


class GatewayTimeout(UpstreamUnavailable):
    status = 504
    description = "The service did not answer in time; retry shortly."


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} · Otesse</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;
color:#1f2933}}h1{{font-size:1.4rem}}</style></head>
<body><h1>{title}</h1><p>{description}</p></body></html>
"""


async def send_error(send: Send, exc: GatewayError, *, api: bool) -> None:
    """Writes ``exc`` as the whole response."""
    if api:
        body = json_error(exc.error, exc.description)
        content_type = b"application/json"
    else:
        body = _PAGE.format(title=html.escape(exc.title),
                            description=html.escape(exc.description)).encode()
        content_type = b"text/html; charset=utf-8"
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *exc.headers(),
    ]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

"""A small HTTP/1.1 client with keep-alive connections (RFC 9112), for the load generator only.

The load generator runs on the same cores as the servers, so every millisecond of CPU it
spends per request is a millisecond the servers do not get. A general client (httpx) costs
about 0.8–1 ms of CPU per request here; this one, a pooled asyncio protocol around the
``httptools`` parser uvicorn uses, costs a fraction of that, so the numbers measure the servers
rather than the client. It speaks just what the benchmark needs: one request at a time per
connection, ``Content-Length`` or chunked answers, no redirects, no cookies (the caller sends
the ``Cookie`` header it wants). Signing in, which needs forms and cookies, uses httpx.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlencode, urlsplit

import httptools

# uvicorn closes a keep-alive connection idle for 5 s; one idle this long is not reused, so a
# request never races the server's close.
MAX_IDLE_SECONDS = 2.0
TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Response:
    method: str
    path: str
    status: int
    # Lower-case names; a repeated header keeps its last value.
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[tuple[int, dict[str, str], bytes]] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self.closed = False
        self.reusable = True
        self.idle_since = time.monotonic()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio's, but behave as one.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"unreadable HTTP answer: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError("the server closed the connection"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.reusable = self._parser.should_keep_alive()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result((self._parser.get_status_code(), self._headers,
                                     b"".join(self._body)))

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    async def exchange(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        assert self._transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._headers, self._body = {}, []
        self._transport.write(raw)
        try:
            return await self._waiter
        finally:
            self._waiter = None
            self.idle_since = time.monotonic()

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()


class Client:
    """Up to ``connections`` requests at once to one ``http://host:port``."""

    def __init__(self, base_url: str, *, connections: int,
                 headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"an http://host:port URL is needed, not {base_url!r}")
        self._host, self._port = parts.hostname, parts.port
        self._slots = asyncio.Semaphore(connections)
        self._idle: list[_Connection] = []
        fixed = {"Host": f"{parts.hostname}:{parts.port}", **(headers or {})}
        self._fixed = "".join(f"{k}: {v}\r\n" for k, v in fixed.items())

    async def _connection(self) -> _Connection:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and now - connection.idle_since < MAX_IDLE_SECONDS:
                return connection
            connection.close()
        _, protocol = await asyncio.get_running_loop().create_connection(
            _Connection, self._host, self._port)
        return protocol

    async def request(self, method: str, path: str, *, params: dict[str, str] | None = None,
                      headers: dict[str, str] | None = None, body: bytes = b"") -> Response:
        target = f"{path}?{urlencode(params)}" if params else path
        head = f"{method} {target} HTTP/1.1\r\n{self._fixed}"
        if headers:
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        if body or method == "POST":
            head += f"Content-Length: {len(body)}\r\n"
        raw = (head + "\r\n").encode("latin-1") + body
        async with self._slots:
            connection = await self._connection()
            try:
                async with asyncio.timeout(TIMEOUT_SECONDS):
                    status, answer_headers, answer = await connection.exchange(raw)
            except BaseException:
                connection.close()
                raise
            if connection.reusable and not connection.closed:
                self._idle.append(connection)
            else:
                connection.close()
        return Response(method, path, status, answer_headers, answer)

    async def get(self, path: str, *, params: dict[str, str] | None = None,
                  headers: dict[str, str] | None = None) -> Response:
        return await self.request("GET", path, params=params, headers=headers)

    async def post_json(self, path: str, payload: dict[str, str]) -> Response:
        return await self.request("POST", path, body=json.dumps(payload).encode(),
                                  headers={"Content-Type": "application/json"})

    async def aclose(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

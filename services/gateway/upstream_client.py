"""The gateway's HTTP/1.1 client for its upstreams (RFC 9112), one connection pool per upstream.

Purpose-built because the general one (httpx/httpcore) walked every pooled connection several
times per request (encode/httpcore#1035, #929), which made the gateway's CPU per request grow
with concurrency. Here a request costs the same whatever the pool holds:

* idle connections are reused last-in first-out from a deque (O(1)); the oldest are closed
  once idle for ``keepalive_expiry`` (4 s, below uvicorn's 5 s, so a request never lands on a
  connection the upstream is closing on purpose);
* at most ``max_connections`` connections exist at once; a request that finds none free waits
  up to ``connect_timeout`` for one, then fails with :class:`ConnectFailed`;
* a connection is reused only when its response was read to the end and neither side asked to
  close it ("A client that receives a "close" connection option MUST cease sending requests on
  that connection", RFC 9112 §9.6);
* a request whose reused connection the upstream closed before answering is sent once more,
  on a connection never used before, only when sending it twice cannot change anything: a safe
  method (GET, HEAD, OPTIONS) with its body in memory. The close may be the keep-alive race
  (RFC 9112 §9.3.1), but it may as well be an upstream that died while handling the request
  (a killed replica behind a TCP balancer closes the connection just the same), and a second
  exchange of an authorization code on another replica is an ``invalid_grant`` that the
  client never earned. Every other request fails with :class:`NoAnswer` (a 503 at the
  gateway: the client decides whether to send it again). The drain answers
  ``Connection: close`` and the keep-alive expiry is below uvicorn's, so a healthy upstream
  never closes a connection under a request on purpose.

Bodies stream both ways: a request body with ``Content-Length`` as it is, else chunked; the
response body as it arrives (``Content-Length``, chunked — decoded — or until the close), with
reading paused while the caller has not taken what is buffered. A response to ``HEAD``, and a
``1xx``/``204``/``304`` one, has no body (RFC 9112 §6.3); ``1xx`` interim responses are skipped.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterable
from typing import cast
from urllib.parse import urlsplit

import httptools

KEEPALIVE_EXPIRY = 4.0
# Response bytes buffered before reading from the upstream pauses until the caller takes them.
_READ_HIGH_WATER = 256 * 1024
# httpx sent "Content-Length: 0" for these methods without a body; so does this client.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
# RFC 9110 §9.2.1: sending one of these twice changes nothing on the server.
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class UpstreamError(Exception):
    """The exchange with the upstream failed."""


class ConnectFailed(UpstreamError):
    """No connection: refused, unreachable, connect timeout, or every connection busy."""


class BadResponse(UpstreamError):
    """The upstream reset or closed the connection before answering, or did not speak HTTP."""


class NoAnswer(ConnectFailed):
    """A reused connection closed before any byte of the answer, and the request was not sent
    again: whether the upstream read it (and acted on it) cannot be told."""


class _UnaskedAnswer(Exception):
    """Bytes of another answer after the end of this one."""


class BrokenBody(UpstreamError):
    """The response body broke off (reset, close before its end, garbage)."""


class BodyLengthMismatch(UpstreamError):
    """A streamed request body longer or shorter than its ``Content-Length``: the request on
    the wire is broken, so is its connection (closed, never reused)."""


class Response:
    """One response as it arrives: status and headers first, then the body in pieces.

    Also the ``httptools`` parser's callback target, fed by its connection.
    """

    def __init__(self, connection: _Connection, *, head_only: bool,
                 read_timeout: float | None) -> None:
        self._connection = connection
        self._read_timeout = read_timeout
        self._parser = httptools.HttpResponseParser(self)
        self._head_only = head_only
        self.status = 0
        # Lower-case names, in the order received.
        self.headers: list[tuple[bytes, bytes]] = []
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._interim = False
        self._has_head = False
        self._framed = False
        self._complete = False
        self._keep_alive = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._done = False
        self.received_any = False

    # -- fed by the connection ------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        self.received_any = True
        if self._complete:
            # Bytes after the end of the answer: this connection cannot be trusted again.
            self._keep_alive = False
            self._connection.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BadResponse("the upstream switched protocols"))
        except httptools.HttpParserError as exc:
            if self._complete:
                # More after the end of the answer (see on_message_begin): not reused.
                self._keep_alive = False
                self._connection.close()
            else:
                self._fail(BadResponse(f"unreadable answer: {exc}"))

    def lost(self, exc: Exception | None, *, reused: bool) -> None:
        if self._complete or self._error is not None:
            return
        if self._has_head and not self._framed:
            # Neither Content-Length nor chunked: the body ends with the connection
            # (RFC 9112 §6.3, item 8).
            self._finish(keep_alive=False)
        elif self._has_head:
            self._fail(BrokenBody("the upstream closed the connection mid-body"))
        elif not self.received_any and reused:
            self._fail(NoAnswer("a reused connection closed before answering"))
        else:
            self._fail(BadResponse(f"the upstream closed the connection ({exc or 'EOF'})"))

    # -- httptools callbacks --------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self._complete:
            # A second answer to one request: stop parsing (the parser raises).
            raise _UnaskedAnswer()
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value.strip()))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            self._interim = True
            return
        self.status = status
        self._has_head = True
        for name, _ in self.headers:
            if name in _FRAMING:
                self._framed = True
        if self._head_only:
            # RFC 9112 §6.3: a response to HEAD ends with its header section, whatever
            # Content-Length says. The parser is not told, so it is not fed again.
            self._finish(keep_alive=self._parser.should_keep_alive())
        else:
            self._wake()

    def on_body(self, body: bytes) -> None:
        if self._complete:
            # A body after an answer to HEAD: not relayed, and the parser stops here.
            raise _UnaskedAnswer()
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _READ_HIGH_WATER and not self._paused:
            self._paused = True
            self._connection.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False  # a 1xx is followed by the real answer
            return
        if not self._complete:
            self._finish(keep_alive=self._parser.should_keep_alive())

    # -- states -----------------------------------------------------------------------------
    def _finish(self, *, keep_alive: bool) -> None:
        self._complete = True
        self._keep_alive = keep_alive
        self._has_head = True
        self._wake()

    def _fail(self, error: UpstreamError) -> None:
        if self._error is None and not self._complete:
            self._error = error
            self._connection.close()
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    # -- the caller's side ----------------------------------------------------------------
    async def wait_head(self) -> None:
        while not self._has_head:
            if self._error is not None:
                raise self._error
            await self._wait()

    async def read(self) -> tuple[bytes, bool]:
        """The body bytes buffered so far (waiting for some), and whether more follow.

        Raises :class:`BrokenBody` when the body broke off; the connection is then closed.
        """
        while not self._chunks:
            if self._complete:
                return b"", False
            if self._error is not None:
                raise self._error if isinstance(self._error, BrokenBody) else BrokenBody(
                    str(self._error))
            try:
                async with asyncio.timeout(self._read_timeout):
                    await self._wait()
            except TimeoutError:
                self._fail(BrokenBody("the upstream sent nothing more in time"))
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self._buffered = 0
        if self._paused:
            self._paused = False
            self._connection.resume_reading()
        return data, not self._complete

    def close(self) -> None:
        """Gives the connection back (read to the end, keep-alive) or closes it."""
        if self._done:
            return
        self._done = True
        self._connection.finished(self, reusable=(
            self._complete and self._keep_alive and not self._chunks))


class _Connection(asyncio.Protocol):
    """One keep-alive connection to the upstream: one request at a time."""

    def __init__(self, pool: UpstreamPool) -> None:
        self._pool = pool
        self._transport: asyncio.Transport | None = None
        self._response: Response | None = None
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self.closed = False
        # Counted in its pool's connections (until discarded).
        self.counted = True
        # Has answered a request before: a close before answering may be the keep-alive race.
        self.reused = False
        self.idle_since = 0.0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio's, but behave as one.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._response is None:
            # Nothing was asked: an idle connection that talks is not reused.
            self.close()
            return
        self._response.feed(data)

    def eof_received(self) -> bool:
        self._lost(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_writer()

    # own
    def _lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake_writer()
        if self._response is not None:
            self._response.lost(exc, reused=self.reused)

    def _wake_writer(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _drain(self) -> None:
        while self._write_paused and not self.closed:
            self._drain_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None

    def pause_reading(self) -> None:
        if self._transport is not None and not self.closed:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self.closed:
            self._transport.resume_reading()

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    async def exchange(self, head: bytes, body: bytes | AsyncIterable[bytes],
                       *, content_length: int | None, head_only: bool) -> Response:
        """Sends one request and waits for the head of its answer."""
        assert self._transport is not None
        response = Response(self, head_only=head_only, read_timeout=self._pool.read_timeout)
        self._response = response
        transport = self._transport
        try:
            if isinstance(body, bytes):
                transport.write(head + body if body else head)
            else:
                transport.write(head)
                await self._stream(body, content_length)
            await response.wait_head()
        except BaseException:
            # Half a request sent or half an answer read: the connection is finished.
            response.close()
            raise
        return response

    async def _stream(self, body: AsyncIterable[bytes], content_length: int | None) -> None:
        assert self._transport is not None
        sent = 0
        async for chunk in body:
            if self.closed:
                # The upstream stopped listening; what it answered (if anything) counts.
                return
            sent += len(chunk)
            if content_length is None:
                self._transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            elif sent > content_length:
                raise BodyLengthMismatch()
            else:
                self._transport.write(chunk)
            await self._drain()
        if self.closed:
            return
        if content_length is None:
            self._transport.write(b"0\r\n\r\n")
        elif sent != content_length:
            raise BodyLengthMismatch()

    def finished(self, response: Response, *, reusable: bool) -> None:
        if self._response is response:
            self._response = None
        if reusable and not self.closed:
            self.reused = True
            self._pool.release(self)
        else:
            self.close()
            self._pool.discard(self)


class UpstreamPool:
    """Keep-alive connections to one upstream, ``http://host[:port]``.

    Plain HTTP only: the upstreams are the services inside the cluster, which listen without
    TLS (TLS ends at the load balancer; gRPC carries its own). The gateway's settings refuse
    an ``https://`` upstream at start-up, naming the variable."""

    def __init__(self, url: str, *, max_connections: int, connect_timeout: float,
                 read_timeout: float | None = None,
                 keepalive_expiry: float = KEEPALIVE_EXPIRY) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"an http://host[:port] URL is needed, not {url!r}")
        self._host = parts.hostname
        self._port = parts.port or 80
        self._netloc = parts.netloc.encode("idna")
        self._max = max_connections
        self._connect_timeout = connect_timeout
        self._expiry = keepalive_expiry
        # The longest wait for the next piece of a response body (None: no limit).
        self.read_timeout = read_timeout
        self._idle: deque[_Connection] = deque()
        # Connections open or opening, idle or busy: never more than ``max_connections``.
        self._count = 0
        # Requests waiting for a connection (given one) or for room to open one (given None).
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._closed = False

    @property
    def connections(self) -> int:
        return self._count

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def request(self, method: str, target: bytes, headers: list[tuple[bytes, bytes]],
                      body: bytes | AsyncIterable[bytes] | None = None) -> Response:
        """Sends a request and returns its response once the head has arrived.

        ``target`` goes on the request line exactly as given: dot segments are not resolved
        and nothing is re-encoded (the gateway forwards the raw path it routed on).

        ``headers`` have lower-case names and no hop-by-hop fields; the framing
        (``Content-Length`` / ``Transfer-Encoding``) is the client's own: a ``Content-Length``
        in ``headers`` is kept for a streamed body (which must match it), else chunked. The
        caller reads the body with :meth:`Response.read` and must :meth:`Response.close` it.
        """
        lines = [method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
        content_length: int | None = None
        has_host = False
        for name, value in headers:
            if name in _FRAMING:
                if name == b"content-length":
                    content_length = int(value)
                continue
            if name == b"host":
                has_host = True
            lines += (name, b": ", value, b"\r\n")
        if not has_host:
            lines += (b"host: ", self._netloc, b"\r\n")
        streamed = body is not None and not isinstance(body, bytes)
        if streamed:
            if content_length is None:
                lines.append(b"transfer-encoding: chunked\r\n")
            else:
                lines += (b"content-length: ", b"%d" % content_length, b"\r\n")
        else:
            size = len(body) if isinstance(body, bytes) else 0
            if size or content_length is not None or method in _BODY_METHODS:
                lines += (b"content-length: ", b"%d" % size, b"\r\n")
            content_length = size
        lines.append(b"\r\n")
        head = b"".join(lines)
        payload = b"" if body is None else body
        head_only = method == "HEAD"

        connection = await self._acquire()
        try:
            return await connection.exchange(head, payload, content_length=content_length,
                                             head_only=head_only)
        except NoAnswer:
            if streamed or method not in _SAFE_METHODS:
                raise
        # RFC 9112 §9.3.1: "A user agent MUST NOT automatically retry a request with a
        # non-idempotent method unless it has some means to know that the request semantics
        # are actually idempotent, regardless of the method, or some means to detect that the
        # original request was never applied." A close without an answer is no such means (see
        # the module's docstring): only a safe method is sent once more, on a connection never
        # used before (which cannot meet the same race).
        connection = await self._acquire(fresh=True)
        return await connection.exchange(head, payload, content_length=content_length,
                                         head_only=head_only)

    async def _acquire(self, *, fresh: bool = False) -> _Connection:
        if self._closed:
            raise ConnectFailed("the pool is closed")
        idle = self._idle
        if idle and not fresh:
            expired = asyncio.get_running_loop().time() - self._expiry
            while idle and idle[0].idle_since < expired:
                self._close_idle(idle.popleft())
            while idle:
                connection = idle.pop()
                if not connection.closed:
                    return connection
                self.discard(connection)
        if self._count >= self._max:
            given = await self._wait_for_room()
            if given is not None:
                if not fresh:
                    return given
                # A connection that answered before could meet the same race: its room is
                # taken over for a new one.
                given.counted = False
                given.close()
            # Room was handed over: it is already counted for this request.
        else:
            self._count += 1
        try:
            return await self._connect()
        except BaseException:
            self._free()
            raise

    async def _wait_for_room(self) -> _Connection | None:
        waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self._connect_timeout):
                return await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Handed a connection (or room) just as the wait ended: pass it on.
                given = waiter.result()
                if given is not None:
                    self.release(given)
                else:
                    self._free()
            else:
                waiter.cancel()
            if isinstance(exc, TimeoutError):
                raise ConnectFailed("every connection to the upstream is busy") from None
            raise

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self), self._host, self._port)
        except TimeoutError:
            raise ConnectFailed("connect timeout") from None
        except OSError as exc:
            raise ConnectFailed(f"cannot connect: {exc}") from None
        return connection

    def release(self, connection: _Connection) -> None:
        """A connection whose answer was read to the end, to reuse."""
        if self._closed or connection.closed:
            connection.close()
            self.discard(connection)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        connection.idle_since = asyncio.get_running_loop().time()
        self._idle.append(connection)

    def discard(self, connection: _Connection) -> None:
        """A closed connection leaves the pool (once), making room for another."""
        if connection.counted:
            connection.counted = False
            self._free()

    def _close_idle(self, connection: _Connection) -> None:
        connection.close()
        self.discard(connection)

    def _free(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the room passes to the waiter, still counted
                return
        self._count -= 1

    async def aclose(self) -> None:
        self._closed = True
        while self._idle:
            self._close_idle(self._idle.popleft())
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectFailed("the pool is closed"))

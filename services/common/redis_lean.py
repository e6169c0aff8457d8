"""A lean Redis client for the hot paths: one command, one round trip, little Python around it.

redis-py spends 62–65 µs of CPU around every command under load here (its pool, retry and
observability layers, ``asyncio.wait_for``, a stream reader), this client 13–16 µs
(``python -m bench.redis_clients``; bench/README.md, "a lean Redis client on the hot paths").
The authorization endpoint sends two commands per request, the code exchange and every token
validation one, and with the rate limits on every token request is checked at the gateway and
in the token service, so the commands that run once per request (and the rate limits'
script) use this client; everything else keeps redis-py (:mod:`services.common.redis_client`),
whose pipelines and transactions this does not offer.

What it does:

* RESP2 over a pool of connections (``max_connections``), one command at a time on each; a
  command waits for a free connection when all are busy.
* ``redis://`` and ``rediss://`` (TLS, the system's CAs, host name checked) URLs with a
  password, a user name and a database number, as redis-py reads them; anything else in the URL
  (a query, a Unix socket) stops start-up with a :class:`ValueError` that names it.
* Failures are redis-py's exception classes, so every handler that answers 503 for a Redis that
  is down (:mod:`services.common.unavailable`) treats both clients alike: no connection, a
  refused password or a connection that breaks → ``ConnectionError``; no answer within
  ``timeout`` → ``TimeoutError``; an error reply → ``ResponseError`` (``NoScriptError``,
  ``BusyLoadingError`` for a Redis still loading, ``ReadOnlyError`` for a replica).
* A connection is never used again after anything but a whole reply: one that timed out, was
  cancelled mid-command or answered out of turn is closed, so a late reply can never be taken
  for the next command's. A connection the server closed (a restart) is dropped from the pool
  when its close arrives; one idle for ``idle_seconds`` is closed rather than trusted.
* Nothing is sent twice: a command that fails is not retried (a script that consumes an
  authorization code must not run twice). The caller gets the error; a request answers 503.

The password never appears in an error or a log line: errors name only the host and port.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import redis.exceptions

Arg = bytes | str | int | float
Reply = bytes | int | None | list["Reply"]

DEFAULT_PORT = 6379
_CRLF = b"\r\n"


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    tls: bool

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        """``redis[s]://[[user]:password@]host[:port][/db]``."""
        try:
            parts = urlsplit(url)
        except ValueError:
            # urllib's own message may quote the netloc, password and all.
            raise ValueError("the Redis URL cannot be parsed (check its user name, password "
                             "and host)") from None
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"the Redis URL's scheme must be redis or rediss, not "
                             f"{parts.scheme or 'none'}")
        if parts.query or parts.fragment:
            raise ValueError("the Redis URL may not carry a query or a fragment")
        if not parts.hostname:
            raise ValueError("the Redis URL names no host")
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise ValueError("the Redis URL's port is not a number from 1 to 65535") from None
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ValueError("the Redis URL's path must be a database number")
        return cls(host=parts.hostname, port=port, db=int(path or 0),
                   username=unquote(parts.username) if parts.username else None,
                   password=unquote(parts.password) if parts.password else None,
                   tls=parts.scheme == "rediss")

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def pack(args: Sequence[Arg]) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode("utf-8")
        elif isinstance(arg, int):
            arg = b"%d" % arg
        elif isinstance(arg, float):
            # As redis-py sends it: the shortest repr that reads back as the same float.
            arg = repr(arg).encode("ascii")
        out.append(b"$%d\r\n" % len(arg))
        out.append(arg)
        out.append(_CRLF)
    return b"".join(out)


class ErrorReply:
    """A ``-ERR …`` reply: raised by :meth:`LeanRedis.execute` as redis-py's class for it."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def exception(self) -> redis.exceptions.RedisError:
        code = self.message.split(" ", 1)[0]
        if code == "NOSCRIPT":
            return redis.exceptions.NoScriptError(self.message)
        if code == "LOADING":
            return redis.exceptions.BusyLoadingError(self.message)
        if code == "READONLY":
            return redis.exceptions.ReadOnlyError(self.message)
        if code in ("NOAUTH", "WRONGPASS") or self.message.startswith("ERR invalid password"):
            return redis.exceptions.AuthenticationError(self.message)
        return redis.exceptions.ResponseError(self.message)


def parse(buffer: bytes, start: int = 0) -> tuple[Reply | ErrorReply, int] | None:
    """One reply from ``buffer[start:]`` and where it ends, or ``None`` while the buffer holds
    only part of it. An unknown type byte or a malformed length raises ``ValueError``."""
    end = buffer.find(_CRLF, start)
    if end < 0:
        return None
    kind = buffer[start]
    line = buffer[start + 1:end]
    after = end + 2
    if kind == 0x24:  # $ bulk string
        length = int(line)
        if length < 0:
            return None, after
        stop = after + length
        if len(buffer) < stop + 2:
            return None
        return buffer[after:stop], stop + 2
    if kind == 0x2B:  # + simple string
        return line, after
    if kind == 0x3A:  # : integer
        return int(line), after
    if kind == 0x2D:  # - error
        return ErrorReply(line.decode("utf-8", "replace")), after
    if kind == 0x2A:  # * array
        count = int(line)
        if count < 0:
            return None, after
        items: list[Reply | ErrorReply] = []
        position = after
        for _ in range(count):
            parsed = parse(buffer, position)
            if parsed is None:
                return None
            item, position = parsed
            items.append(item)
        return items, position  # type: ignore[return-value]
    raise ValueError(f"unexpected reply type byte {kind!r}")


class _Connection(asyncio.Protocol):
    """One connection; at most one command in flight."""

    def __init__(self, loop: asyncio.AbstractEventLoop, where: str) -> None:
        self._loop = loop
        self._where = where
        self._transport: asyncio.WriteTransport | None = None
        self._buffer = b""
        self._waiter: asyncio.Future[Reply | ErrorReply] | None = None
        self.closed = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; both write and abort.
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        try:
            parsed = parse(buffer)
        except ValueError as exc:
            self._fail(redis.exceptions.InvalidResponse(f"Redis at {self._where} sent a "
                                                        f"reply that cannot be read: {exc}"))
            return
        if parsed is None:
            self._buffer = buffer
            return
        reply, end = parsed
        waiter = self._waiter
        if waiter is None or end != len(buffer):
            # A reply nobody asked for, or more than one: this connection is out of step.
            self._fail(redis.exceptions.InvalidResponse(
                f"Redis at {self._where} answered out of turn"))
            return
        self._buffer = b""
        self._waiter = None
        if not waiter.done():
            waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._settle(redis.exceptions.ConnectionError(
            f"Redis at {self._where} closed the connection"))

    def _settle(self, error: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def _fail(self, error: Exception) -> None:
        self._settle(error)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    async def request(self, payload: bytes, timeout: float) -> Reply | ErrorReply:
        if self.closed or self._transport is None:
            raise redis.exceptions.ConnectionError(f"Redis at {self._where}: connection closed")
        waiter: asyncio.Future[Reply | ErrorReply] = self._loop.create_future()
        self._waiter = waiter
        self._transport.write(payload)
        expiry = self._loop.call_later(timeout, self._expire, waiter)
        try:
            return await waiter
        except BaseException:
            # A timeout, a cancellation, a broken connection: whatever comes later on this
            # connection would be this command's reply, so it is never used again.
            self.close()
            raise
        finally:
            expiry.cancel()

    def _expire(self, waiter: asyncio.Future[Reply | ErrorReply]) -> None:
        if waiter is self._waiter and not waiter.done():
            self._waiter = None
            waiter.set_exception(redis.exceptions.TimeoutError(
                f"Redis at {self._where} did not answer in time"))


class LeanRedis:
    """Commands over a pool of connections to one Redis (see the module's docstring)."""

    def __init__(self, endpoint: Endpoint, *, max_connections: int = 64,
                 connect_timeout: float = 1.0, timeout: float = 2.0, idle_seconds: float = 30.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._endpoint = endpoint
        self._connect_timeout = connect_timeout
        self._timeout = timeout
        self._idle_seconds = idle_seconds
        self._ssl = (ssl_context or ssl.create_default_context()) if endpoint.tls else None
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._closed = False
        self._hello = self._hello_commands(endpoint)

    @classmethod
    def from_url(cls, url: str, *, max_connections: int = 64, connect_timeout: float = 1.0,
                 timeout: float = 2.0, ssl_context: ssl.SSLContext | None = None) -> LeanRedis:
        return cls(Endpoint.from_url(url), max_connections=max_connections,
                   connect_timeout=connect_timeout, timeout=timeout, ssl_context=ssl_context)

    @staticmethod
    def _hello_commands(endpoint: Endpoint) -> list[bytes]:
        commands = []
        if endpoint.password is not None:
            if endpoint.username:
                commands.append(pack([b"AUTH", endpoint.username, endpoint.password]))
            else:
                commands.append(pack([b"AUTH", endpoint.password]))
        if endpoint.db:
            commands.append(pack([b"SELECT", endpoint.db]))
        return commands

    async def execute(self, *args: Arg) -> Reply:
        """Sends one command and returns its reply: ``bytes`` for a string (``b"OK"`` for a
        status), ``int``, ``None`` for nil, or a list of those."""
        payload = pack(args)
        async with self._slots:
            connection = self._take_idle() or await self._connect()
            try:
                reply = await connection.request(payload, self._timeout)
            except BaseException:
                self._open.discard(connection)  # closed by request()
                raise
            self._give_back(connection)
        if isinstance(reply, ErrorReply):
            raise reply.exception()
        return reply

    async def ping(self) -> None:
        """Raises when Redis does not answer."""
        await self.execute(b"PING")

    def script(self, source: str) -> Script:
        return Script(self, source)

    async def aclose(self) -> None:
        self._closed = True
        for connection in list(self._open):
            connection.close()
        self._idle.clear()
        self._open.clear()

    def _take_idle(self) -> _Connection | None:
        idle = self._idle
        while idle:
            connection = idle.pop()
            if not connection.closed:
                if asyncio.get_running_loop().time() - connection.idle_since < \
                        self._idle_seconds:
                    return connection
                connection.close()
            self._open.discard(connection)
        return None

    def _give_back(self, connection: _Connection) -> None:
        if connection.closed or self._closed:
            connection.close()
            self._open.discard(connection)
            return
        connection.idle_since = asyncio.get_running_loop().time()
        self._idle.append(connection)

    async def _connect(self) -> _Connection:
        if self._closed:
            raise redis.exceptions.ConnectionError("the Redis client is closed")
        endpoint = self._endpoint
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop, endpoint.where), endpoint.host, endpoint.port,
                    ssl=self._ssl, server_hostname=endpoint.host if self._ssl else None)
        except (OSError, TimeoutError) as exc:
            raise redis.exceptions.ConnectionError(
                f"cannot connect to Redis at {endpoint.where}: {type(exc).__name__}") from None
        try:
            for command in self._hello:
                reply = await connection.request(command, self._timeout)
                if isinstance(reply, ErrorReply):
                    error = reply.exception()
                    if isinstance(error, redis.exceptions.ResponseError):
                        # A wrong password or a database that does not exist: Redis is not
                        # usable as configured, which is a connection failure for the caller.
                        error = redis.exceptions.AuthenticationError(
                            f"Redis at {endpoint.where} refused the connection's set-up: "
                            f"{reply.message.split(' ', 1)[0]}")
                    raise error
        except BaseException:
            connection.close()
            raise
        self._open.add(connection)
        return connection


class Script:
    """A Lua script run by its SHA-1 (``EVALSHA``), sent whole once when Redis does not know it
    (after a restart): ``NOSCRIPT`` means it did not run, so sending it again is safe."""

    def __init__(self, client: LeanRedis, source: str) -> None:
        self._client = client
        self._source = source
        self._sha = hashlib.sha1(source.encode("utf-8"), usedforsecurity=False).hexdigest()

    async def __call__(self, keys: Sequence[Arg], args: Sequence[Arg]) -> Reply:
        try:
            return await self._client.execute(b"EVALSHA", self._sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return await self._client.execute(b"EVAL", self._source, len(keys), *keys, *args)

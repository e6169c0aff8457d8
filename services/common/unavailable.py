"""Recognising a dependency that is down, so callers answer 503 / UNAVAILABLE, never 500."""

from __future__ import annotations

import errno
import socket

import asyncpg
import grpc
import redis.exceptions

_UNAVAILABLE_GRPC = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}

# The exception classes a store or peer raises, some of whose instances mean "down right now"
# (:func:`is_unavailable` tells which): what an error handler must catch to answer 503 itself
# (the others it catches are answered 500, logged with the request id).
DEPENDENCY_FAILURES: tuple[type[Exception], ...] = (
    OSError, redis.exceptions.RedisError, asyncpg.PostgresError, asyncpg.InterfaceError,
    asyncpg.InternalClientError, grpc.aio.AioRpcError)


# Errno values of an OSError that is not a ConnectionError subclass yet means the peer cannot be
# reached (asyncio's connect raises a plain OSError for these).
_UNREACHABLE_ERRNOS = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN,
                                 errno.EHOSTDOWN, errno.ETIMEDOUT, errno.ECONNREFUSED,
                                 errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE})


def _unreachable(exc: OSError) -> bool:
    """An operating-system error of the connection kind: refused, reset, timed out, no route,
    no such host. Never any OSError: a missing file or a denied permission is a bug or a
    broken deployment, a 500 with its traceback in the log, not a silent 503."""
    if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror)):
        return True
    if exc.errno in _UNREACHABLE_ERRNOS:
        return True
    # asyncio's create_connection, having tried every address of a name and failed on each in
    # a different way, raises OSError('Multiple exceptions: …') without an errno.
    return exc.errno is None and str(exc).startswith("Multiple exceptions:")


def is_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` means a store or peer cannot be reached right now."""
    if isinstance(exc, OSError):
        return _unreachable(exc)
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                        redis.exceptions.BusyLoadingError)):
        return True
    if isinstance(exc, (asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                        asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError)):
        return True
    if isinstance(exc, asyncpg.InternalClientError):
        # A session the server ended (a shutdown says so, then closes the connection): a
        # statement sent in between finds the connection still reading the server's last
        # words. Nothing was sent; the server is going away.
        return True
    if isinstance(exc, asyncpg.PostgresError) and getattr(exc, "sqlstate", "").startswith(
            ("08", "57P")):  # connection exceptions; admin shutdown / crash shutdown
        return True
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code() in _UNAVAILABLE_GRPC
    return False

"""Recognising a dependency that is down, so callers answer 503 / UNAVAILABLE, never 500."""

from __future__ import annotations

import asyncpg
import grpc
import redis.exceptions

_UNAVAILABLE_GRPC = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}

# The exception classes a store or peer raises, some of whose instances mean "down right now"
# (:func:`is_unavailable` tells which): what an error handler must catch to answer 503 itself.
DEPENDENCY_FAILURES: tuple[type[Exception], ...] = (
    OSError, redis.exceptions.RedisError, asyncpg.PostgresError, asyncpg.InterfaceError,
    asyncpg.InternalClientError, grpc.aio.AioRpcError)


def is_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` means a store or peer cannot be reached right now."""
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return True
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

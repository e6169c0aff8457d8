"""The server interceptor decides every call's status in one place, for unary and streaming
calls alike: a real server on a loopback port, a generic service whose methods raise."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence

import asyncpg
import grpc
import pytest
from grpc import aio

from services.common.errors import TemporarilyUnavailable
from services.common.grpc_server import create_server
from services.common.rpc_errors import NotFound


class Boom(Exception):
    """A bug in a servicer."""


RAISED: dict[str, Callable[[], Exception]] = {
    "rpc-error": lambda: NotFound("no such grant"),
    "temporarily-unavailable": lambda: TemporarilyUnavailable("no signing key yet"),
    "dependency-down": lambda: asyncpg.CannotConnectNowError("the database is starting up"),
    "bug": lambda: Boom("a programming error"),
}
EXPECTED = {
    "rpc-error": (grpc.StatusCode.NOT_FOUND, "no such grant"),
    "temporarily-unavailable": (grpc.StatusCode.UNAVAILABLE, "no signing key yet"),
    "dependency-down": (grpc.StatusCode.UNAVAILABLE, "a dependency is unavailable; retry shortly"),
    "bug": (grpc.StatusCode.INTERNAL, "internal error"),
}


def _add(server: aio.Server) -> Sequence[str]:
    async def unary(request: bytes, context: aio.ServicerContext[bytes, bytes]) -> bytes:
        raise RAISED[request.decode()]()

    async def stream(request: bytes, context: aio.ServicerContext[bytes, bytes],
                     ) -> AsyncIterator[bytes]:
        yield b"first"
        raise RAISED[request.decode()]()

    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Raiser", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
    }),))
    return ["test.Raiser"]


@pytest.mark.parametrize("raised", list(RAISED))
async def test_unary_and_streaming_calls_end_with_the_same_status(
        raised: str, caplog: pytest.LogCaptureFixture) -> None:
    server = create_server(service="test", add_servicers=_add, host="127.0.0.1", port=0)
    await server.start()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            unary_method: aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                "/test.Raiser/Unary")
            stream_method: aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(
                "/test.Raiser/Stream")
            with caplog.at_level(logging.ERROR, logger="otesse.grpc"):
                with pytest.raises(aio.AioRpcError) as unary:
                    await unary_method(raised.encode(), timeout=5)
                call = stream_method(raised.encode(), timeout=5)
                received = []
                with pytest.raises(aio.AioRpcError) as streamed:
                    async for item in call:
                        received.append(item)
    finally:
        await server.stop(grace=0)
    assert (unary.value.code(), unary.value.details()) == EXPECTED[raised]
    assert (streamed.value.code(), streamed.value.details()) == EXPECTED[raised]
    assert received == [b"first"]
    # Only a bug is logged with its traceback, once per call, and its story stays in the log.
    logged = [record for record in caplog.records if record.exc_info]
    assert len(logged) == (2 if raised == "bug" else 0)
    assert all(record.exc_info and record.exc_info[0] is Boom for record in logged)

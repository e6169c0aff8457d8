"""The request id travels over gRPC metadata and comes back in HTTP responses."""

from __future__ import annotations

import json
import logging

import grpc
import httpx
import pytest
from starlette.applications import Starlette

from otesse.auth.v1 import registry_pb2 as pb
from otesse.auth.v1 import registry_pb2_grpc
from services.common import request_id
from services.common.grpc_client import create_channel
from services.common.http import Readiness, RequestContextMiddleware, health_routes
from services.common.log import JsonFormatter, request_id_var
from tests.servers import serve_app


class _Lines(logging.Handler):
    """Formats at emit time, as the real handler does, so the context is the server's."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter("registry"))
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


async def test_grpc_calls_carry_the_request_id(registry_address: str) -> None:
    channel = create_channel(registry_address, services=("otesse.auth.v1.ClientRegistry",))
    stub = registry_pb2_grpc.ClientRegistryStub(channel)
    handler = _Lines()
    logger = logging.getLogger("otesse.grpc")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    token = request_id_var.set("trace-abc-123")
    try:
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetClient(pb.GetClientRequest(client_id="otesse_ci_missing"))
    finally:
        request_id_var.reset(token)
        logger.removeHandler(handler)
        logger.setLevel(level)
        await channel.close()
    lines = [line for line in handler.lines if str(line.get("method")).endswith("/GetClient")]
    assert lines, "the server logged no line for the call"
    assert lines[-1]["request_id"] == "trace-abc-123"
    assert lines[-1]["code"] == "NOT_FOUND"


async def test_http_request_id_is_echoed_or_created() -> None:
    app = Starlette(routes=health_routes(Readiness()))
    app.add_middleware(RequestContextMiddleware, service="test")
    async with serve_app(app) as url, httpx.AsyncClient() as client:
        given = await client.get(f"{url}/healthz", headers={"X-Request-ID": "abc-123"})
        assert given.headers["x-request-id"] == "abc-123"
        made = await client.get(f"{url}/healthz")
        assert len(made.headers["x-request-id"]) == 32
        forged = await client.get(f"{url}/healthz", headers={"X-Request-ID": "a\" b"})
        assert forged.headers["x-request-id"] != "a\" b"


def test_only_well_formed_ids_are_accepted() -> None:
    assert request_id.accept_or_new("ok-1.2:3") == "ok-1.2:3"
    assert request_id.accept_or_new("x" * 200) != "x" * 200
    assert request_id.accept_or_new("line\nbreak") != "line\nbreak"

"""The drain on SIGTERM, end to end in a real process: for ``OTESSE_SHUTDOWN_DRAIN_SECONDS``
``/readyz`` answers 503 *and* the gRPC health service answers ``NOT_SERVING`` (so load balancers
and clients balancing per call move away), while requests and calls that still arrive are
answered — an HTTP answer then closes its keep-alive connection (``Connection: close``), so no
idle connection is left for the stop to close under a request; then the process exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from otesse.auth.v1 import registry_pb2, registry_pb2_grpc, token_pb2, token_pb2_grpc
from tests.conftest import free_port
from tests.servers import wait_ready

DRAIN_SECONDS = 3.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _http_get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    ) -> tuple[bytes, bool]:
    """``GET /healthz`` on an open keep-alive connection: the head, and whether the server
    closed the connection after the answer."""
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    await reader.readexactly(length)
    try:
        closed = await asyncio.wait_for(reader.read(1), timeout=1) == b""
    except TimeoutError:
        closed = False
    return head.lower(), closed


async def _registry_call(channel: grpc.aio.Channel) -> None:
    listed = await registry_pb2_grpc.ClientRegistryStub(channel).ListClients(
        registry_pb2.ListClientsRequest(owner_user_id="nobody"), timeout=5)
    assert list(listed.clients) == []


async def _token_call(channel: grpc.aio.Channel) -> None:
    answer = await token_pb2_grpc.TokenServiceStub(channel).ValidateToken(
        token_pb2.ValidateTokenRequest(token="otesse_at_not-a-token"), timeout=5)
    assert not answer.active


SERVICES = {
    "registry": ("OTESSE_REGISTRY_GRPC_PORT", "OTESSE_REGISTRY_HTTP_PORT",
                 "otesse.auth.v1.ClientRegistry", _registry_call),
    "token": ("OTESSE_TOKEN_GRPC_PORT", "OTESSE_TOKEN_HTTP_PORT",
              "otesse.auth.v1.TokenService", _token_call),
}


@pytest.mark.parametrize("service", list(SERVICES))
async def test_sigterm_turns_readiness_and_grpc_health_off_then_stops(
        service: str, test_env: dict[str, str], registry_address: str) -> None:
    grpc_variable, http_variable, grpc_service, call = SERVICES[service]
    grpc_port, http_port = free_port(), free_port()
    env = {**os.environ, **test_env, grpc_variable: str(grpc_port),
           http_variable: str(http_port), "OTESSE_REGISTRY_ADDR": registry_address,
           "OTESSE_SHUTDOWN_DRAIN_SECONDS": str(DRAIN_SECONDS)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli.main", "serve", service, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    # A channel without client-side health checking, as a Kubernetes probe or a caller that
    # has not yet seen NOT_SERVING: ``create_channel``'s would refuse to send to a draining
    # server, which is the point of the drain.
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}")
    health = health_pb2_grpc.HealthStub(channel)

    async def statuses() -> set[int]:
        answers = [await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
                   for name in ("", grpc_service)]
        return {answer.status for answer in answers}

    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as http:
            await wait_ready(http, service)
            assert await statuses() == {SERVING}
            reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
            head, closed = await _http_get(reader, writer)
            assert b"connection: close" not in head and not closed
            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            # Both turn within a tick of the signal; a busy machine gets a generous margin.
            while (ready := await http.get("/readyz")).status_code == 200 \
                    or await statuses() != {NOT_SERVING}:
                assert time.monotonic() - signalled < DRAIN_SECONDS - 1, "no drain seen"
                await asyncio.sleep(0.05)
            assert ready.status_code == 503 and ready.json()["draining"] is True
            # The keep-alive connection opened before SIGTERM is answered, then closed.
            head, closed = await _http_get(reader, writer)
            writer.close()
            assert head.startswith(b"http/1.1 200") and b"connection: close" in head
            assert closed
            # Still answering while the load balancers and clients catch up.
            await call(channel)
            assert process.returncode is None
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0
        assert time.monotonic() - signalled >= DRAIN_SECONDS - 0.2
    finally:
        await channel.close()
        if process.returncode is None:
            process.kill()
            await process.wait()

"""The registry as its own process: ready, serving, and a graceful stop on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import httpx

from otesse.auth.v1 import registry_pb2 as pb
from otesse.auth.v1 import registry_pb2_grpc
from services.common.grpc_client import create_channel
from tests.conftest import free_port


async def test_serve_ready_and_stop_on_sigterm(test_env: dict[str, str]) -> None:
    grpc_port, http_port = free_port(), free_port()
    env = {**os.environ, **test_env, "OTESSE_REGISTRY_GRPC_PORT": str(grpc_port),
           "OTESSE_REGISTRY_HTTP_PORT": str(http_port)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli.main", "serve", "registry", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as http:
            for _ in range(100):
                try:
                    ready = await http.get("/readyz")
                    if ready.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            assert ready.status_code == 200 and ready.json()["checks"] == {"postgres": "ok"}
            assert (await http.get("/healthz")).json() == {"status": "ok"}
            metrics = await http.get("/metrics")
            assert "otesse_http_request_duration_seconds" in metrics.text
        channel = create_channel(f"127.0.0.1:{grpc_port}",
                                 services=("otesse.auth.v1.ClientRegistry",))
        stub = registry_pb2_grpc.ClientRegistryStub(channel)
        listed = await stub.ListClients(pb.ListClientsRequest(owner_user_id="nobody"), timeout=5)
        assert list(listed.clients) == []
        await channel.close()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=15) == 0
        assert process.stderr is not None
        logs = (await process.stderr.read()).decode()
        assert '"msg": "registry serving"' in logs
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

"""The token service as its own process (``otesse-auth serve token``): it serves HTTP and gRPC,
warns loudly about the development KEK, never logs a token, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import httpx
import redis.asyncio as aioredis

from otesse.auth.v1 import token_pb2, token_pb2_grpc
from services.common.grpc_client import create_channel
from tests.conftest import free_port
from tests.servers import wait_ready
from tests.token.conftest import Client, exchange, issue_code


async def test_process_serves_warns_and_stops_on_sigterm(
        test_env: dict[str, str], registry_address: str, redis: aioredis.Redis,
        redis_prefix: str, client: Client) -> None:
    http_port, grpc_port = free_port(), free_port()
    env = {**os.environ, **test_env, "OTESSE_REGISTRY_ADDR": registry_address,
           "OTESSE_TOKEN_HTTP_PORT": str(http_port), "OTESSE_TOKEN_GRPC_PORT": str(grpc_port)}
    env.pop("OTESSE_TOKEN_KEK", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli.main", "serve", "token", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as http:
            await wait_ready(http, "the token service", attempts=200)
            code = await issue_code(redis, redis_prefix, client)
            response = await exchange(http, client, code)
            assert response.status_code == 200
            channel = create_channel(f"127.0.0.1:{grpc_port}",
                                     services=("otesse.auth.v1.TokenService",))
            try:
                result = await token_pb2_grpc.TokenServiceStub(channel).ValidateToken(
                    token_pb2.ValidateTokenRequest(token=response.json()["access_token"]))
                assert result.active
            finally:
                await channel.close()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=20) == 0
        assert process.stderr is not None
        lines = [json.loads(line) for line in (await process.stderr.read()).splitlines()
                 if line.startswith(b"{")]
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert any(line["level"] == "warning" and "OTESSE_TOKEN_KEK" in line["msg"]
               for line in lines)
    text = json.dumps(lines)
    for secret in (response.json()["access_token"], response.json()["refresh_token"],
                   client.secret, code):
        assert secret not in text
    assert any(line.get("path") == "/oauth/token" and line.get("status") == 200
               for line in lines)

"""The token service's public listener (``OTESSE_TOKEN_EDGE_PORT``): the gateway's edge in the
token process, where the ingress sends the token service's public paths.

Each test runs ``otesse-auth serve token`` as its own process, as it ships, and attacks the edge
the way a client on the internet would: what the gateway refuses, this listener refuses the same
way, and what it serves is the token service's answer with the edge's fields on it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import httpx
import pytest_asyncio
import redis.asyncio as aioredis

from tests import audit_rows
from tests.conftest import free_port
from tests.servers import wait_ready
from tests.token.conftest import REDIRECT_URI, Client, exchange, issue_code, refresh

# The load balancer's network: the test's loopback address is a client like any other.
NOT_LOOPBACK = "10.0.0.0/8"


@dataclass
class Running:
    process: asyncio.subprocess.Process
    own: str
    edge: str
    edge_port: int
    # Its Redis keys' prefix, its own: what one test charges to 127.0.0.1 (failed client
    # authentications, requests) is no other test's budget.
    redis_prefix: str

    async def stop(self) -> list[dict[str, object]]:
        """SIGTERM, a clean exit, and the process's JSON log lines."""
        self.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(self.process.wait(), timeout=30) == 0
        assert self.process.stderr is not None
        return [json.loads(line) for line in (await self.process.stderr.read()).splitlines()
                if line.startswith(b"{")]


Start = Callable[..., Awaitable[Running]]


@pytest_asyncio.fixture
async def start(test_env: dict[str, str], registry_address: str,
                redis_prefix: str) -> AsyncIterator[Start]:
    """Starts the token service with its edge on, with ``settings`` as extra environment."""
    started: list[asyncio.subprocess.Process] = []

    async def run(**settings: str) -> Running:
        http_port, grpc_port, edge_port = free_port(), free_port(), free_port()
        # Under the session's prefix, so the session's end removes its keys too.
        prefix = f"{redis_prefix}edge-{edge_port}:"
        env = {**os.environ, **test_env, "OTESSE_REDIS_PREFIX": prefix,
               "OTESSE_REGISTRY_ADDR": registry_address,
               "OTESSE_TOKEN_HTTP_PORT": str(http_port),
               "OTESSE_TOKEN_GRPC_PORT": str(grpc_port),
               "OTESSE_TOKEN_EDGE_PORT": str(edge_port), "OTESSE_LOG_LEVEL": "INFO",
               **settings}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli.main", "serve", "token", env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, limit=1 << 24)
        started.append(process)
        running = Running(process, own=f"http://127.0.0.1:{http_port}",
                          edge=f"http://127.0.0.1:{edge_port}", edge_port=edge_port,
                          redis_prefix=prefix)
        async with httpx.AsyncClient(base_url=running.own) as http:
            await wait_ready(http, "the token service")
        return running

    yield run
    for process in started:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_the_flow_through_the_edge_with_its_fields_and_no_secret_in_the_log(
        start: Start, redis: aioredis.Redis, client: Client) -> None:
    running: Running = await start()
    async with httpx.AsyncClient(base_url=running.edge) as edge:
        code = await issue_code(redis, running.redis_prefix, client)
        exchanged = await exchange(edge, client, code)
        assert exchanged.status_code == 200, exchanged.text
        assert exchanged.headers["x-content-type-options"] == "nosniff"
        request_id = exchanged.headers["x-request-id"]
        # One request id, the edge's, never the app's beside it.
        assert exchanged.headers.get_list("x-request-id") == [request_id]
        refreshed = await refresh(edge, client, exchanged.json()["refresh_token"])
        assert refreshed.status_code == 200, refreshed.text
        # The replayed code: the token service's own answer, through the edge.
        replayed = await exchange(edge, client, code)
        assert replayed.status_code == 400
        assert replayed.json()["error"] == "invalid_grant"
        jwks = await edge.get("/.well-known/jwks.json")
        assert jwks.status_code == 200 and jwks.json()["keys"]
    lines = await running.stop()
    text = json.dumps(lines)
    for secret in (exchanged.json()["access_token"], exchanged.json()["refresh_token"],
                   refreshed.json()["refresh_token"], client.secret, code):
        assert secret not in text
    # One access line per request, the edge's.
    assert [line.get("status") for line in lines
            if line.get("request_id") == request_id and line.get("msg") == "request"] == [200]
    assert not any(line["level"] == "error" for line in lines), text


async def test_only_the_token_services_public_paths_are_served_on_the_edge(
        start: Start) -> None:
    running: Running = await start()
    async with httpx.AsyncClient(base_url=running.edge) as edge, \
            httpx.AsyncClient(base_url=running.own) as own:
        for path in ("/healthz", "/readyz", "/metrics", "/oauth/authorize", "/login", "/"):
            answer = await edge.get(path)
            assert answer.status_code == 404, path
            assert answer.headers["x-content-type-options"] == "nosniff"
        # A path that resolves to an internal one is refused before any routing.
        assert (await edge.get("/.well-known/../metrics")).status_code in (400, 404)
        # The service's own port keeps the probes and the metrics.
        assert (await own.get("/readyz")).status_code == 200
        metrics = await own.get("/metrics")
        assert metrics.status_code == 200
        # The edge's requests are counted under their own service label.
        assert 'service="token-edge"' in metrics.text
    await running.stop()


async def test_the_edge_refuses_what_the_gateway_refuses(start: Start, client: Client) -> None:
    running: Running = await start(OTESSE_GATEWAY_MAX_TOKEN_BODY_BYTES="1024")
    async with httpx.AsyncClient(base_url=running.edge) as edge:
        # A body over the token endpoints' cap, refused before it is read.
        big = await edge.post("/oauth/token", content=b"x" * 2048,
                              headers={"content-type": "application/x-www-form-urlencoded"})
        assert big.status_code == 413
        assert big.json()["error"] == "invalid_request"
        # A Host this server does not answer for.
        assert (await edge.get("/.well-known/jwks.json",
                               headers={"host": "evil.example"})).status_code == 421
        # Both framings at once: request smuggling.
        reader, writer = await asyncio.open_connection("127.0.0.1", running.edge_port)
        writer.write(b"POST /oauth/token HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.read(200), timeout=5)
        writer.close()
        assert head.startswith(b"HTTP/1.1 400"), head
        # A client cannot speak for the gateway: its internal field is stripped on the way
        # in, and the token service's own mark never comes out.
        wrong = await edge.post("/oauth/token", data={
            "grant_type": "refresh_token", "refresh_token": "otesse_rt_x",
            "client_id": client.client_id, "client_secret": "wrong"},
            headers={"x-otesse-client-auth": "ok"})
        assert wrong.status_code == 401
        assert wrong.json()["error"] == "invalid_client"
        assert not [name for name in wrong.headers if name.startswith("x-otesse-")]
        # HTTPS said by a trusted proxy (loopback, by default) is believed: HSTS.
        secure = await edge.get("/.well-known/jwks.json",
                                headers={"x-forwarded-proto": "https"})
        assert "strict-transport-security" in secure.headers
    await running.stop()


async def test_client_authentication_failures_are_charged_to_the_address(
        start: Start, client: Client) -> None:
    running: Running = await start(
        OTESSE_GATEWAY_RATE_CLIENT_AUTH_FAILURES_PER_IP="2/60",
        OTESSE_GATEWAY_TRUSTED_PROXIES=NOT_LOOPBACK)
    wrong = {"grant_type": "refresh_token", "refresh_token": "otesse_rt_x",
             "client_id": client.client_id, "client_secret": "guess"}
    async with httpx.AsyncClient(base_url=running.edge) as edge:
        statuses = [(await edge.post("/oauth/token", data=wrong)).status_code
                    for _ in range(3)]
        assert statuses == [401, 401, 429]
        # The address is refused whatever it sends now, the right secret included.
        right = await edge.post("/oauth/token", data={**wrong, "client_secret": client.secret})
        assert right.status_code == 429
        assert int(right.headers["retry-after"]) >= 1
        # HTTPS said by a peer that is no trusted proxy is not believed: no HSTS.
        plain = await edge.get("/.well-known/jwks.json",
                               headers={"x-forwarded-proto": "https"})
        assert "strict-transport-security" not in plain.headers
    await running.stop()


async def test_no_client_chooses_the_address_the_token_service_records(
        start: Start, redis: aioredis.Redis, client: Client, pool: asyncpg.Pool) -> None:
    """The edge trusts no proxy here; the token service trusts loopback (its default). A
    client's own X-Forwarded-For must not reach the token service as if a proxy wrote it."""
    running: Running = await start(OTESSE_GATEWAY_TRUSTED_PROXIES=NOT_LOOPBACK)
    code = await issue_code(redis, running.redis_prefix, client)
    async with httpx.AsyncClient(base_url=running.edge) as edge:
        body = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
                "client_id": client.client_id, "client_secret": client.secret}
        answer = await edge.post("/oauth/token", json=body, headers={
            "x-forwarded-for": "6.6.6.6", "x-real-ip": "6.6.6.6",
            "forwarded": "for=6.6.6.6;proto=https", "x-forwarded-proto": "https"})
    assert answer.status_code == 200, answer.text
    # Not believed at the edge either: no HSTS for a scheme the client merely claimed.
    assert "strict-transport-security" not in answer.headers
    rows = await audit_rows.of_request(pool, answer.headers["x-request-id"])
    assert [(row["event_type"], row["client_ip"]) for row in rows] == [
        ("token.issued", "127.0.0.1")]
    await running.stop()


async def test_connection_limits_hold_on_the_edge_and_only_there(start: Start) -> None:
    running: Running = await start(
        OTESSE_GATEWAY_HEADER_TIMEOUT_SECONDS="0.5",
        OTESSE_GATEWAY_MAX_CONNECTIONS_PER_IP="2",
        OTESSE_GATEWAY_TRUSTED_PROXIES=NOT_LOOPBACK)
    # Headers that never finish: 408 once the deadline passes.
    reader, writer = await asyncio.open_connection("127.0.0.1", running.edge_port)
    writer.write(b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(200), timeout=5)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    writer.close()
    await asyncio.sleep(0.1)
    # Two connections held from one address; the third is refused with a clear 429.
    held = [await asyncio.open_connection("127.0.0.1", running.edge_port) for _ in range(2)]
    reader, writer = await asyncio.open_connection("127.0.0.1", running.edge_port)
    answer = await asyncio.wait_for(reader.read(300), timeout=5)
    assert answer.startswith(b"HTTP/1.1 429"), answer
    writer.close()
    # The service's own port (the gateway's pool, the probes) has none of the edge's caps:
    # the same address, its edge connections used up, still gets its answers there.
    async with httpx.AsyncClient(base_url=running.own) as own:
        answers = await asyncio.gather(*(own.get("/readyz") for _ in range(4)))
        assert [a.status_code for a in answers] == [200] * 4
    for _, other in held:
        other.close()
    await running.stop()


async def test_a_request_in_flight_on_the_edge_finishes_across_sigterm(
        start: Start, redis: aioredis.Redis, client: Client) -> None:
    running: Running = await start(OTESSE_SHUTDOWN_DRAIN_SECONDS="0.5")
    code = await issue_code(redis, running.redis_prefix, client)
    body = json.dumps({"grant_type": "authorization_code", "code": code,
                       "redirect_uri": REDIRECT_URI, "client_id": client.client_id,
                       "client_secret": client.secret}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", running.edge_port)
    writer.write(b"POST /oauth/token HTTP/1.1\r\nHost: localhost\r\n"
                 b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
                 + body[:10])
    await writer.drain()
    await asyncio.sleep(0.2)
    # The request is in flight (its body half sent) when the stop begins; the rest arrives
    # after the drain, while the server waits for the requests it holds.
    running.process.send_signal(signal.SIGTERM)
    await asyncio.sleep(1.0)
    assert running.process.returncode is None
    writer.write(body[10:])
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    head, _, content = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer
    assert b"connection: close" in head.lower()
    assert json.loads(content)["token_type"] == "Bearer"
    assert await asyncio.wait_for(running.process.wait(), timeout=30) == 0

"""The cheap attacks on the public edge, each run for real against the gateway on loopback:
slow bodies that would hold the upstream pools, slow headers (slowloris), idle connections,
floods of connections from one address or from everywhere, and large or pathological bodies
that would stall the event loop. Every attack is bounded (a few hundred connections at most)
and every test checks that other clients are served meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client import REGISTRY

from tests.gateway.conftest import GatewayFactory

# Generous: the machine running the tests is shared and busy.
SERVED_WITHIN = 1.5


@asynccontextmanager
async def raw_connection(url: str, *, source: str | None = None,
                         ) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(
        parts.hostname, parts.port, local_addr=(source, 0) if source else None)
    try:
        yield reader, writer
    finally:
        writer.transport.abort()


async def read_until_closed(reader: asyncio.StreamReader, timeout: float) -> bytes | None:
    """Everything the server sends until it closes the connection (a reset counts as closed),
    or None when it is still open after ``timeout`` seconds."""
    data = b""
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                data += chunk
    except ConnectionError:
        pass
    except TimeoutError:
        return None
    return data


async def served(url: str, path: str, *, method: str = "GET") -> tuple[int, float]:
    """A well-behaved client's request: its status and how long it took."""
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=10.0) as client:
        response = await client.request(method, path)
    return response.status_code, time.monotonic() - started


def refused_count(limit: str) -> float:
    """Connections the server refused (its metric), by limit."""
    return REGISTRY.get_sample_value("otesse_http_connections_refused_total",
                                     {"limit": limit}) or 0.0


# -- Slow bodies --------------------------------------------------------------------------------

async def test_slow_bodies_do_not_take_the_upstream_pools(gateway_factory: GatewayFactory,
                                                          ) -> None:
    """Three times as many half-sent bodies as each upstream pool holds, to both upstreams and
    from many addresses (so no per-address limit hides the pool): everyone else is served."""
    pool = 4
    async with gateway_factory(OTESSE_GATEWAY_UPSTREAM_MAX_CONNECTIONS=str(pool),
                               OTESSE_GATEWAY_CONNECT_TIMEOUT_SECONDS="0.5",
                               OTESSE_GATEWAY_BODY_TIMEOUT_SECONDS="30") as gw:
        async with contextlib.AsyncExitStack() as held:
            for i in range(3 * pool):
                for path in ("/oauth/introspect", "/logout"):
                    _, writer = await held.enter_async_context(raw_connection(gw.url))
                    writer.write(f"POST {path} HTTP/1.1\r\nHost: localhost\r\n"
                                 f"X-Forwarded-For: 203.0.113.{i + 1}\r\n"
                                 "Content-Type: application/x-www-form-urlencoded\r\n"
                                 "Content-Length: 100\r\n\r\ntoken=ab".encode())
                    await writer.drain()
            await asyncio.sleep(0.5)  # long enough for the gateway to act on every one
            results = [await served(gw.url, "/oauth/token", method="POST"),
                       await served(gw.url, "/.well-known/jwks.json"),
                       await served(gw.url, "/login"),
                       await served(gw.url, "/login", method="POST")]
        hits = gw.token.hits + gw.authorize.hits
    assert [status for status, _ in results] == [200, 200, 200, 200]
    assert max(elapsed for _, elapsed in results) < SERVED_WITHIN
    # Nothing of a half-sent body reached an upstream.
    assert "/oauth/introspect" not in hits and "/logout" not in hits


async def test_a_body_too_slow_is_408_and_never_reaches_the_upstream(
        gateway_factory: GatewayFactory) -> None:
    async with gateway_factory(OTESSE_GATEWAY_BODY_TIMEOUT_SECONDS="0.3") as gw:
        async with raw_connection(gw.url) as (reader, writer):
            started = time.monotonic()
            writer.write(b"POST /oauth/introspect HTTP/1.1\r\nHost: localhost\r\n"
                         b"Content-Length: 10\r\n\r\nab")
            answer = await read_until_closed(reader, timeout=5)
            elapsed = time.monotonic() - started
        assert gw.token.hits == []
    assert answer is not None and answer.startswith(b"HTTP/1.1 408 ")
    assert b"connection: close" in answer.lower()
    assert b'"error":"invalid_request"' in answer
    assert elapsed < 0.3 + SERVED_WITHIN


# -- Large and pathological bodies --------------------------------------------------------------

async def _flood_body(url: str, *, chunked: bool, size: int) -> bytes | None:
    """Sends a ``size``-byte ``a&a&…`` body to /oauth/token (chunked or by length) and returns
    what the gateway answered before closing."""
    head = b"POST /oauth/token HTTP/1.1\r\nHost: localhost\r\n" \
           b"Content-Type: application/x-www-form-urlencoded\r\n"
    async with raw_connection(url) as (reader, writer):
        reading = asyncio.ensure_future(read_until_closed(reader, timeout=30))
        with contextlib.suppress(ConnectionError):
            if chunked:
                writer.write(head + b"Transfer-Encoding: chunked\r\n\r\n")
                piece = b"a&" * 8192
                for _ in range(size // len(piece)):
                    if reading.done():
                        break
                    writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
            else:
                writer.write(head + b"Content-Length: %d\r\n\r\n" % size + b"a&" * (size // 2))
            await writer.drain()
        return await reading


@pytest.mark.parametrize("chunked", [False, True], ids=["by-content-length", "chunked"])
async def test_large_pathological_token_bodies_do_not_stall_the_gateway(
        gateway_factory: GatewayFactory, chunked: bool) -> None:
    """Twelve 4 MiB ``a&a&…`` bodies at once to /oauth/token: each is refused fast (413, or the
    connection closed) and a JWKS request meanwhile is answered at once."""
    async with gateway_factory() as gw:
        floods = [asyncio.ensure_future(_flood_body(gw.url, chunked=chunked, size=4 << 20))
                  for _ in range(12)]
        started = time.monotonic()
        latencies: list[float] = []
        await asyncio.sleep(0.05)
        while True:
            status, elapsed = await served(gw.url, "/.well-known/jwks.json")
            assert status == 200
            latencies.append(elapsed)
            if all(flood.done() for flood in floods):
                break
            await asyncio.sleep(0.05)
        answers = [flood.result() for flood in floods]
        took = time.monotonic() - started
        hits = list(gw.token.hits)
    assert max(latencies) < SERVED_WITHIN
    assert took < 5.0
    for answer in answers:
        assert answer is not None
        assert answer == b"" or answer.startswith(b"HTTP/1.1 413 "), answer[:100]
    assert "/oauth/token" not in hits


async def test_a_body_over_the_route_cap_is_refused_before_it_is_sent(
        gateway_factory: GatewayFactory) -> None:
    """A client announcing a large body learns at once that it is too large: the gateway
    answers 413 without waiting for (or reading) the body."""
    async with gateway_factory() as gw:
        async with raw_connection(gw.url) as (reader, writer):
            writer.write(b"POST /oauth/token HTTP/1.1\r\nHost: localhost\r\n"
                         b"Content-Length: 16385\r\n\r\n")
            answer = await read_until_closed(reader, timeout=5)
    assert answer is not None and answer.startswith(b"HTTP/1.1 413 ")
    assert b'"error":"invalid_request"' in answer


# -- Slow headers, idle connections, connection floods -------------------------------------------

async def _trickle(url: str, stop: asyncio.Event) -> bytes | None:
    """A slowloris connection: a request line, then one header line every 0.25 s, never the
    end of the headers; returns what the gateway sent before it closed the connection."""
    async with raw_connection(url) as (reader, writer):
        writer.write(b"GET /oauth/authorize HTTP/1.1\r\nHost: localhost\r\n")
        reading = asyncio.ensure_future(read_until_closed(reader, timeout=30))
        with contextlib.suppress(ConnectionError):
            while not reading.done() and not stop.is_set():
                writer.write(b"X-Trickle: 1\r\n")
                await writer.drain()
                await asyncio.sleep(0.25)
        if not reading.done():
            reading.cancel()
            return b"still open"
        return await reading


async def test_slowloris_connections_are_closed_after_the_header_timeout(
        gateway_factory: GatewayFactory) -> None:
    """300 connections trickling header bytes are each answered 408 and closed about one
    header timeout after they started, while other clients are served."""
    before = refused_count("header_timeout")
    async with gateway_factory(OTESSE_GATEWAY_HEADER_TIMEOUT_SECONDS="1") as gw:
        stop = asyncio.Event()
        started = time.monotonic()
        trickles = [asyncio.ensure_future(_trickle(gw.url, stop)) for _ in range(300)]
        latencies: list[float] = []
        try:
            async with asyncio.timeout(15):
                while not all(trickle.done() for trickle in trickles):
                    status, elapsed = await served(gw.url, "/.well-known/jwks.json")
                    assert status == 200
                    latencies.append(elapsed)
                    await asyncio.sleep(0.1)
        except TimeoutError:
            pass
        finally:
            stop.set()
        answers = await asyncio.gather(*trickles)
        took = time.monotonic() - started
    assert all(answer and answer.startswith(b"HTTP/1.1 408 ") for answer in answers), {
        answer[:40] if answer else answer for answer in answers}
    assert took < 1 + 5.0
    assert latencies and max(latencies) < SERVED_WITHIN
    assert refused_count("header_timeout") - before == 300


async def test_idle_connections_are_closed_after_the_header_timeout(
        gateway_factory: GatewayFactory) -> None:
    """A connection that never sends a byte is closed (without an answer: nothing was asked)."""
    async with gateway_factory(OTESSE_GATEWAY_HEADER_TIMEOUT_SECONDS="0.5") as gw:
        async with contextlib.AsyncExitStack() as held:
            readers = [(await held.enter_async_context(raw_connection(gw.url)))[0]
                       for _ in range(50)]
            started = time.monotonic()
            answers = await asyncio.gather(*(read_until_closed(r, timeout=10) for r in readers))
            took = time.monotonic() - started
    assert answers == [b""] * 50  # closed (None: still open), and nothing was answered
    assert took < 0.5 + 5.0


async def test_over_the_connection_cap_a_client_gets_a_clear_503(
        gateway_factory: GatewayFactory) -> None:
    before = refused_count("connections")
    async with gateway_factory(OTESSE_GATEWAY_MAX_CONNECTIONS="20",
                               OTESSE_GATEWAY_HEADER_TIMEOUT_SECONDS="30") as gw:
        async with contextlib.AsyncExitStack() as held:
            for _ in range(20):
                await held.enter_async_context(raw_connection(gw.url))
            await asyncio.sleep(0.2)
            async with raw_connection(gw.url) as (reader, writer):
                writer.write(b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
                refused = await read_until_closed(reader, timeout=5)
        # Once the flood is gone, the gateway serves again.
        await asyncio.sleep(0.2)
        status, _ = await served(gw.url, "/.well-known/jwks.json")
    assert refused is not None and refused.startswith(b"HTTP/1.1 503 ")
    assert b"retry-after: " in refused.lower() and b"connection: close" in refused.lower()
    assert b'"error":"temporarily_unavailable"' in refused
    assert status == 200
    assert refused_count("connections") - before == 1


async def test_one_address_cannot_hold_more_than_its_connections(
        gateway_factory: GatewayFactory) -> None:
    """Loopback peers are plain clients here (the load balancer is elsewhere): 127.0.0.1 holds
    its five connections, its sixth is refused with 429, 127.0.0.2 is still served."""
    async with gateway_factory(OTESSE_GATEWAY_MAX_CONNECTIONS_PER_IP="5",
                               OTESSE_GATEWAY_TRUSTED_PROXIES="10.0.0.0/8",
                               OTESSE_GATEWAY_HEADER_TIMEOUT_SECONDS="30") as gw:
        async with contextlib.AsyncExitStack() as held:
            for _ in range(5):
                await held.enter_async_context(raw_connection(gw.url, source="127.0.0.1"))
            await asyncio.sleep(0.2)
            async with raw_connection(gw.url, source="127.0.0.1") as (reader, writer):
                writer.write(b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
                refused = await read_until_closed(reader, timeout=5)
            async with raw_connection(gw.url, source="127.0.0.2") as (reader, writer):
                writer.write(b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: localhost\r\n"
                             b"Connection: close\r\n\r\n")
                other = await read_until_closed(reader, timeout=5)
    assert refused is not None and refused.startswith(b"HTTP/1.1 429 ")
    assert b"retry-after: " in refused.lower()
    assert b'"error":"too_many_requests"' in refused
    assert other is not None and other.startswith(b"HTTP/1.1 200 ")


async def test_one_address_cannot_hold_more_than_its_requests(
        gateway_factory: GatewayFactory) -> None:
    """Behind the load balancer every client shares its connections: the per-address limit on
    requests in flight is what bounds one client there."""
    before = REGISTRY.get_sample_value("otesse_gateway_rate_limited_total",
                                       {"limit": "requests_in_flight_ip"}) or 0.0
    async with gateway_factory(OTESSE_GATEWAY_MAX_REQUESTS_PER_IP="3") as gw:
        slow = {"X-Forwarded-For": "203.0.113.50", "x-test-action": "slow",
                "x-test-seconds": "1"}
        async with httpx.AsyncClient(base_url=gw.url, timeout=10.0) as client:
            held = [asyncio.ensure_future(client.get("/oauth/authorize", headers=slow))
                    for _ in range(3)]
            await asyncio.sleep(0.3)
            refused = await client.get("/oauth/authorize",
                                       headers={"X-Forwarded-For": "203.0.113.50"})
            api_refused = await client.post("/oauth/token",
                                            headers={"X-Forwarded-For": "203.0.113.50"})
            other = await client.get("/oauth/authorize",
                                     headers={"X-Forwarded-For": "203.0.113.51"})
            statuses = [(await response).status_code for response in held]
            after = await client.get("/oauth/authorize",
                                     headers={"X-Forwarded-For": "203.0.113.50"})
    assert statuses == [200, 200, 200]
    assert refused.status_code == 429 and "Too many" in refused.text
    assert int(refused.headers["retry-after"]) >= 1
    assert (api_refused.status_code, api_refused.json()["error"]) == (429, "too_many_requests")
    assert other.status_code == 200
    assert after.status_code == 200
    assert REGISTRY.get_sample_value("otesse_gateway_rate_limited_total",
                                     {"limit": "requests_in_flight_ip"}) == before + 2

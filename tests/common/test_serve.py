"""The limits uvicorn's protocol is given (services/common/connection_limits.py, enforced by
services/common/uvicorn_patches.py): the header cap (431 while headers arrive), the header
deadline and how it meets keep-alive and pipelining, peers exempt from the per-address cap, the
open-files limit. The tripwire on uvicorn's internals is tests/common/test_uvicorn_patches.py."""

from __future__ import annotations

import asyncio
import ipaddress
import resource
import time

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from services.common.connection_limits import ConnectionLimits
from services.common.serve import raise_open_files_limit
from services.common.uvicorn_patches import limited_protocol
from tests.servers import serve_app

CAP = 4096


async def echo(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"{len(request.headers)} headers")


async def raw_exchange(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), timeout=5)
    finally:
        writer.close()


@pytest.mark.parametrize(("extra", "status"), [
    (b"X-Small: " + b"a" * 100 + b"\r\n", b"200"),
    (b"X-Big: " + b"a" * (CAP + 1) + b"\r\n", b"431"),
    (b"".join(b"X-Many-%d: %s\r\n" % (i, b"a" * 100) for i in range(60)), b"431"),
], ids=["under the cap", "fails because one header passes the cap",
        "fails because many headers add up past the cap"])
async def test_headers_are_capped_while_they_arrive(extra: bytes, status: bytes) -> None:
    app = Starlette(routes=[Route("/", echo)])
    async with serve_app(app, http=limited_protocol(ConnectionLimits(max_header_bytes=CAP))) as url:
        answer = await raw_exchange(url, b"GET / HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")
    assert answer.split(b" ", 2)[1] == status, answer[:200]
    if status == b"431":
        assert b'"error":"invalid_request"' in answer
        assert b"connection: close" in answer.lower()


async def test_a_url_past_the_cap_is_refused() -> None:
    app = Starlette(routes=[Route("/", echo)])
    async with serve_app(app, http=limited_protocol(ConnectionLimits(max_header_bytes=CAP))) as url:
        answer = await raw_exchange(url, b"GET /?" + b"a" * (CAP + 1) + b" HTTP/1.1\r\n"
                                    b"Host: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431")


async def test_the_count_starts_again_for_each_request_on_a_connection() -> None:
    app = Starlette(routes=[Route("/", echo)])
    half = b"X-Half: " + b"a" * (CAP // 2) + b"\r\n"
    async with serve_app(app, http=limited_protocol(ConnectionLimits(max_header_bytes=CAP))) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for _ in range(3):
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n" + half + b"\r\n")
                await writer.drain()
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
                assert head.startswith(b"HTTP/1.1 200"), head
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
        finally:
            writer.close()


async def slow(request: Request) -> PlainTextResponse:
    await asyncio.sleep(float(request.query_params.get("seconds", "0.5")))
    return PlainTextResponse("slow done")


async def test_a_stalled_pipelined_request_never_interrupts_the_answer_in_progress() -> None:
    """The second request's headers stall past the deadline while the first is answered: the
    first answer is delivered whole, then the connection closes (no 408 inside it)."""
    app = Starlette(routes=[Route("/", echo), Route("/slow", slow)])
    limits = ConnectionLimits(header_timeout=0.2)
    async with serve_app(app, http=limited_protocol(limits)) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(b"GET /slow?seconds=0.6 HTTP/1.1\r\nHost: x\r\n\r\n"
                         b"GET / HTTP/1.1\r\nHost: x\r\nX-Stalled: ")
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), timeout=5)
        finally:
            writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b"slow done")
    assert answer.count(b"HTTP/1.1 ") == 1


async def test_a_kept_alive_connection_gets_a_fresh_deadline_for_each_request() -> None:
    app = Starlette(routes=[Route("/", echo)])
    limits = ConnectionLimits(header_timeout=0.3)
    async with serve_app(app, http=limited_protocol(limits)) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            heads = []
            for _ in range(2):
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                await writer.drain()
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                heads.append(head)
                # Idle longer than the header deadline: the keep-alive timeout (5 s) governs
                # the time between requests.
                await asyncio.sleep(0.5)
        finally:
            writer.close()
    assert [head.split(b" ")[1] for head in heads] == [b"200", b"200"]


async def test_unlimited_peers_are_not_capped_per_address() -> None:
    """A load balancer's connections carry many clients: it is exempt from the per-address cap
    (the gateway limits its clients per request instead)."""
    app = Starlette(routes=[Route("/", echo)])
    loopback = (ipaddress.ip_network("127.0.0.0/8"),)
    limits = ConnectionLimits(max_connections_per_ip=2, unlimited_peers=loopback)
    async with serve_app(app, http=limited_protocol(limits)) as url:
        host, port = url.removeprefix("http://").split(":")
        connections = [await asyncio.open_connection(host, int(port)) for _ in range(5)]
        try:
            answers = []
            for reader, writer in connections:
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                await writer.drain()
                answers.append(await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout=5))
        finally:
            for _, writer in connections:
                writer.close()
    assert answers == [b"HTTP/1.1 200 OK\r\n"] * 5


async def test_a_refused_connection_gets_its_answer_even_with_its_request_unread() -> None:
    """Refused at once, while its request is still arriving: the client reads a whole 503,
    not a reset (the server half-closes and drops what comes, RFC 9112 §9.6)."""
    app = Starlette(routes=[Route("/", echo)])
    limits = ConnectionLimits(max_connections=1)
    async with serve_app(app, http=limited_protocol(limits)) as url:
        host, port = url.removeprefix("http://").split(":")
        _, holder = await asyncio.open_connection(host, int(port))
        try:
            await asyncio.sleep(0.1)
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n")
            for _ in range(20):
                writer.write(b"a" * 10000)
                await asyncio.sleep(0.01)
            answer = await asyncio.wait_for(reader.read(), timeout=5)
            writer.close()
        finally:
            holder.close()
    assert answer.startswith(b"HTTP/1.1 503 ")
    assert answer.endswith(b'"error_description":"The server is busy; retry shortly."}')


def test_the_open_files_limit_is_raised_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 512), hard))
        raised = raise_open_files_limit()
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
        assert raised == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_header_deadline_counts_from_the_connection_start() -> None:
    """The first request's deadline starts when the connection opens, not at its first byte:
    waiting before sending does not buy a second deadline."""
    app = Starlette(routes=[Route("/", echo)])
    limits = ConnectionLimits(header_timeout=0.5)
    async with serve_app(app, http=limited_protocol(limits)) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            started = time.monotonic()
            await asyncio.sleep(0.3)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
            answer = await asyncio.wait_for(reader.read(), timeout=5)
            elapsed = time.monotonic() - started
        finally:
            writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert elapsed < 0.5 + 0.6

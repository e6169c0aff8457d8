"""The header cap of HTTP services: headers past it are refused while they arrive (431), so a
client cannot make a server hold megabytes of them; requests under it are served as usual."""

from __future__ import annotations

import asyncio

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from services.common.serve import header_capped_protocol
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
    async with serve_app(app, http=header_capped_protocol(CAP)) as url:
        answer = await raw_exchange(url, b"GET / HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")
    assert answer.split(b" ", 2)[1] == status, answer[:200]
    if status == b"431":
        assert b'"error":"invalid_request"' in answer
        assert b"connection: close" in answer.lower()


async def test_a_url_past_the_cap_is_refused() -> None:
    app = Starlette(routes=[Route("/", echo)])
    async with serve_app(app, http=header_capped_protocol(CAP)) as url:
        answer = await raw_exchange(url, b"GET /?" + b"a" * (CAP + 1) + b" HTTP/1.1\r\n"
                                    b"Host: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431")


async def test_the_count_starts_again_for_each_request_on_a_connection() -> None:
    app = Starlette(routes=[Route("/", echo)])
    half = b"X-Half: " + b"a" * (CAP // 2) + b"\r\n"
    async with serve_app(app, http=header_capped_protocol(CAP)) as url:
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

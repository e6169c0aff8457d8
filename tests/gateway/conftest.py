"""Stand-ins for the authorize and token services, and a gateway pointed at them.

The stand-ins are real HTTP servers on loopback (uvicorn, via ``serve_app``) that describe the
request they received in a JSON answer, so a test sees exactly what the gateway forwarded. A
request header ``x-test-action`` asks for something else: ``slow`` (answer after
``x-test-seconds``), ``stream-in`` (count a streamed body, flagging its first chunk),
``stream-out`` (send a large body in chunks, pausing after the first), ``cookies``, ``hop``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from starlette.types import ASGIApp, Receive, Scope, Send

from services.common.http import Readiness
from services.common.settings import Env
from services.common.uvicorn_patches import limited_protocol
from services.gateway.app import connection_limits, create_app
from services.gateway.settings import GatewaySettings
from tests.conftest import REDIS_URL
from tests.servers import serve_app

STREAM_CHUNK = 64 * 1024


@dataclass
class FakeUpstream:
    name: str
    hits: list[str] = field(default_factory=list)
    first_chunk_seen: asyncio.Event = field(default_factory=asyncio.Event)
    client_has_first_chunk: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        self.hits.append(scope["path"])
        headers = [(k.decode(), v.decode("latin-1")) for k, v in scope["headers"]]
        action = dict(headers).get("x-test-action", "echo")
        if action == "slow":
            await asyncio.sleep(float(dict(headers)["x-test-seconds"]))
        if action == "stream-out":
            await self._stream_out(send, int(dict(headers)["x-test-bytes"]))
            return
        body = hashlib.sha256()
        size = chunks = 0
        more = True
        while more:
            message = await receive()
            chunk = message.get("body", b"")
            if chunk:
                if not chunks:
                    self.first_chunk_seen.set()
                chunks += 1
                size += len(chunk)
                body.update(chunk)
            more = message.get("more_body", False)
        answer: dict[str, Any] = {
            "upstream": self.name, "method": scope["method"], "path": scope["path"],
            "raw_path": scope["raw_path"].decode(), "query": scope["query_string"].decode(),
            "headers": headers, "peer_port": scope["client"][1],
            "body_bytes": size, "body_sha256": body.hexdigest(),
        }
        out_headers = [(b"content-type", b"application/json"),
                       (b"x-request-id", b"upstream-must-not-leak")]
        if action == "cookies":
            out_headers += [(b"set-cookie", b"a=1; Path=/; HttpOnly"),
                            (b"set-cookie", b"b=2; Path=/")]
        if action == "hop":
            out_headers += [(b"connection", b"x-up-hop"), (b"x-up-hop", b"1"),
                            (b"keep-alive", b"timeout=9"), (b"x-up-kept", b"1")]
        status = 200
        if action == "auth-failed":
            status = 401
            out_headers += [(b"x-otesse-client-auth", b"failed")]
        if action == "internal":
            out_headers += [(b"x-otesse-secret", b"for the gateway only"),
                            (b"X-Otesse-Client-Auth", b"ok")]
        await send({"type": "http.response.start", "status": status, "headers": out_headers})
        await send({"type": "http.response.body", "body": json.dumps(answer).encode()})

    async def _stream_out(self, send: Send, total: int) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")]})
        await send({"type": "http.response.body", "body": b"x" * STREAM_CHUNK, "more_body": True})
        # Only a gateway that streams lets the client see the first chunk before the rest exists.
        await asyncio.wait_for(self.client_has_first_chunk.wait(), timeout=5)
        sent = STREAM_CHUNK
        while sent < total:
            size = min(STREAM_CHUNK, total - sent)
            await send({"type": "http.response.body", "body": b"y" * size, "more_body": True})
            sent += size
        await send({"type": "http.response.body", "body": b""})


@asynccontextmanager
async def serve_gateway(app: ASGIApp, settings: GatewaySettings) -> AsyncIterator[str]:
    """Like ``serve_app``, with the server options production uses (``serve_http``): the
    gateway's connection limits, and no ``proxy_headers``, which would rewrite the peer before
    the gateway judges it."""
    async with serve_app(app, http=limited_protocol(connection_limits(settings)),
                         proxy_headers=False, server_header=False) as url:
        yield url


@dataclass
class Stack:
    url: str
    authorize: FakeUpstream
    token: FakeUpstream
    settings: GatewaySettings


GatewayFactory = Callable[..., AbstractAsyncContextManager[Stack]]


@pytest_asyncio.fixture(scope="module")
async def upstreams() -> AsyncIterator[tuple[FakeUpstream, str, FakeUpstream, str]]:
    authorize, token = FakeUpstream("authorize"), FakeUpstream("token")
    async with serve_app(authorize) as authorize_url, serve_app(token) as token_url:
        yield authorize, authorize_url, token, token_url


@pytest.fixture(scope="module")
def gateway_factory(upstreams: tuple[FakeUpstream, str, FakeUpstream, str],
                    redis_prefix: str) -> GatewayFactory:
    """``async with gateway_factory(OTESSE_GATEWAY_…="…") as stack``: a gateway on a free port."""
    authorize, authorize_url, token, token_url = upstreams

    @asynccontextmanager
    async def start(**env: str) -> AsyncIterator[Stack]:
        values = {
            "OTESSE_GATEWAY_AUTHORIZE_URL": authorize_url,
            "OTESSE_GATEWAY_TOKEN_URL": token_url,
            "OTESSE_REDIS_URL": REDIS_URL,
            # A key space of its own, so rate-limit buckets never leak between tests.
            "OTESSE_REDIS_PREFIX": f"{redis_prefix}gw{secrets.token_hex(4)}:",
            **env,
        }
        settings = GatewaySettings.from_env(Env(values))
        async with serve_gateway(create_app(settings, Readiness()), settings) as url:
            yield Stack(url=url, authorize=authorize, token=token, settings=settings)

    return start


@pytest_asyncio.fixture(scope="module")
async def shared_stack(gateway_factory: GatewayFactory) -> AsyncIterator[Stack]:
    async with gateway_factory() as running:
        yield running


@pytest.fixture
def stack(shared_stack: Stack) -> Stack:
    """The gateway with default settings (shared by a module's tests), upstreams reset."""
    return shared_stack


@pytest.fixture(autouse=True)
def _fresh_upstreams(upstreams: tuple[FakeUpstream, str, FakeUpstream, str]) -> None:
    for upstream in (upstreams[0], upstreams[2]):
        upstream.hits.clear()
        upstream.first_chunk_seen = asyncio.Event()
        upstream.client_has_first_chunk = asyncio.Event()

"""The gateway's upstream HTTP/1.1 client against tiny real asyncio servers on loopback: keep-alive
reuse and expiry, the close race and its one retry, chunked bodies both ways, the pool bound, and
answers that are not HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import pytest

from services.gateway.proxy import WHOLE_ANSWER_BYTES
from services.gateway.upstream_client import (
    BadResponse,
    BodyLengthMismatch,
    BrokenBody,
    ConnectFailed,
    NoAnswer,
    Response,
    UpstreamError,
    UpstreamPool,
)
from tests.conftest import free_port
from tests.gateway.conftest import GatewayFactory

HOST = [(b"host", b"upstream.test")]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Request:
    head: bytes
    body: bytes
    # The body as it was on the wire (chunked framing included).
    wire: bytes

    @property
    def method(self) -> bytes:
        return self.head.split(b" ", 1)[0]


@dataclass
class Server:
    """What a test server saw: one list of requests per connection it accepted."""

    port: int
    connections: list[list[Request]] = field(default_factory=list)
    closed_by_client: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


Handler = Callable[[Server, int, Request, asyncio.StreamWriter], Awaitable[bool]]


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    fields = {line.split(b":", 1)[0].strip().lower(): line.split(b":", 1)[1].strip()
              for line in head.split(b"\r\n")[1:] if b":" in line}
    if fields.get(b"transfer-encoding") == b"chunked":
        body, wire = b"", b""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.strip(), 16)
            chunk = await reader.readexactly(size + 2)
            wire += size_line + chunk
            body += chunk[:-2]
            if size == 0:
                return Request(head, body, wire)
    body = await reader.readexactly(int(fields.get(b"content-length", b"0")))
    return Request(head, body, body)


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[Server]:
    """A server calling ``handler(server, connection_index, request, writer)`` per request;
    the handler returns whether to keep reading requests on that connection."""
    server = Server(port=0)

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = len(server.connections)
        server.connections.append([])
        try:
            while True:
                request = await read_request(reader)
                if request is None:
                    server.closed_by_client += 1
                    return
                server.connections[index].append(request)
                if not await handler(server, index, request, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    listener = await asyncio.start_server(connection, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()


async def answer_ok(server: Server, index: int, request: Request,
                    writer: asyncio.StreamWriter) -> bool:
    writer.write(OK)
    return True


def answer_ok_after(release: asyncio.Event) -> Handler:
    """Answers each request once ``release`` is set: the connection stays busy until then."""
    async def held(server: Server, index: int, request: Request,
                   writer: asyncio.StreamWriter) -> bool:
        await release.wait()
        writer.write(OK)
        return True

    return held


async def echo(server: Server, index: int, request: Request,
               writer: asyncio.StreamWriter) -> bool:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(request.body),
                                                                       request.body))
    return True


async def read_all(response: Response) -> bytes:
    data = b""
    try:
        while True:
            chunk, more = await response.read()
            data += chunk
            if not more:
                return data
    finally:
        response.close()


async def body_of(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


@asynccontextmanager
async def pool_for(server: Server, **options: float) -> AsyncIterator[UpstreamPool]:
    pool = UpstreamPool(server.url, max_connections=int(options.pop("max_connections", 10)),
                        connect_timeout=options.pop("connect_timeout", 1.0), **options)
    try:
        yield pool
    finally:
        await pool.aclose()


async def test_sequential_requests_reuse_one_connection() -> None:
    async with serve(answer_ok) as server, pool_for(server) as pool:
        for _ in range(3):
            response = await pool.request("GET", b"/a", HOST)
            assert (response.status, await read_all(response)) == (200, b"ok")
        assert [len(requests) for requests in server.connections] == [3]
        assert (pool.connections, pool.idle) == (1, 1)


async def test_the_most_recently_used_connection_is_reused_first() -> None:
    async with serve(answer_ok) as server, pool_for(server) as pool:
        first, second = await asyncio.gather(pool.request("GET", b"/a", HOST),
                                             pool.request("GET", b"/b", HOST))
        await read_all(first)
        await read_all(second)
        await read_all(await pool.request("GET", b"/c", HOST))
        paths = sorted([request.head.split(b" ")[1] for request in requests]
                       for requests in server.connections)
        # /b's connection went back to the pool last, so it served /c.
        assert paths == [[b"/a"], [b"/b", b"/c"]]


async def test_idle_connection_expires_and_is_closed() -> None:
    async with serve(answer_ok) as server, pool_for(server, keepalive_expiry=0.05) as pool:
        await read_all(await pool.request("GET", b"/a", HOST))
        await asyncio.sleep(0.1)
        await read_all(await pool.request("GET", b"/b", HOST))
        await asyncio.sleep(0.01)
        assert [len(requests) for requests in server.connections] == [1, 1]
        assert server.closed_by_client == 1  # the expired one, closed by the pool
        assert (pool.connections, pool.idle) == (1, 1)


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\n\r\nok",
], ids=["connection-close", "http-1.0", "body-until-close"])
async def test_connection_is_not_reused_when_the_upstream_ends_it(answer: bytes) -> None:
    async def handler(server: Server, index: int, request: Request,
                      writer: asyncio.StreamWriter) -> bool:
        writer.write(answer)
        return False

    async with serve(handler) as server, pool_for(server) as pool:
        for _ in range(2):
            assert await read_all(await pool.request("GET", b"/a", HOST)) == b"ok"
        assert [len(requests) for requests in server.connections] == [1, 1]
        assert pool.connections == 0


async def race(server: Server, index: int, request: Request,
               writer: asyncio.StreamWriter) -> bool:
    """Answers the first request of a connection, then closes it on the next one unanswered:
    the keep-alive race, where the upstream closes just as a request is sent."""
    if len(server.connections[index]) > 1:
        writer.transport.abort()
        return False
    return await echo(server, index, request, writer)


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
async def test_a_safe_request_on_a_reused_connection_closed_before_answering_is_retried_once(
        method: str) -> None:
    async with serve(race) as server, pool_for(server) as pool:
        await read_all(await pool.request(method, b"/a", HOST))
        response = await pool.request(method, b"/a", HOST)
        assert response.status == 200
        await read_all(response)
        # The first connection saw both requests; the retry went to a new connection.
        assert [len(requests) for requests in server.connections] == [2, 1]


@pytest.mark.parametrize("body", [b"grant_type=authorization_code&code=c", None],
                         ids=["buffered-body", "no-body"])
async def test_a_post_is_never_sent_twice_when_its_connection_closes_unanswered(
        body: bytes | None) -> None:
    """The upstream read the request before the connection closed (as a replica killed while
    it exchanged a code does): sent again, it would reach another replica as a replay."""
    async with serve(race) as server, pool_for(server) as pool:
        await read_all(await pool.request("POST", b"/a", HOST, b"first"))
        # Not answered: the gateway answers 503, the client may send it again.
        with pytest.raises(NoAnswer):
            await pool.request("POST", b"/a", HOST, body)
        assert [len(requests) for requests in server.connections] == [2]


async def test_a_streamed_body_is_never_sent_twice() -> None:
    async with serve(race) as server, pool_for(server) as pool:
        await read_all(await pool.request("GET", b"/a", HOST))
        with pytest.raises(NoAnswer):
            await pool.request("GET", b"/a", HOST, body_of(b"once", b" only"))
        assert len(server.connections) == 1


async def test_the_retry_never_takes_a_used_connection_even_from_a_full_pool() -> None:
    """Every connection of a full pool is busy when a request meets the race: the connection
    handed to its retry by the next answer is closed and a new one opened in its place, since
    a used one may meet the same race (here: every second request on a connection does)."""

    async def second_requests_race(server: Server, index: int, request: Request,
                                   writer: asyncio.StreamWriter) -> bool:
        if len(server.connections[index]) > 1 and b"/stale" in request.head:
            await asyncio.sleep(0.3)  # others queue for the pool meanwhile
            writer.transport.abort()
            return False
        if len(server.connections[index]) > 1:
            await asyncio.sleep(0.8)  # busy until after the race
        return await echo(server, index, request, writer)

    async with serve(second_requests_race) as server, pool_for(
            server, max_connections=2, connect_timeout=5.0) as pool:
        async def warm() -> bytes:
            return await read_all(await pool.request("GET", b"/warm", HOST))

        await asyncio.gather(warm(), warm())
        assert pool.connections == 2
        async def send(method: str, path: bytes, body: bytes | None) -> tuple[int, bytes]:
            response = await pool.request(method, path, HOST, body)
            return response.status, await read_all(response)

        slow = asyncio.create_task(send("POST", b"/slow", b"slow"))
        await asyncio.sleep(0.05)
        stale = asyncio.create_task(send("GET", b"/stale", None))
        await asyncio.sleep(0.05)
        queued = asyncio.create_task(send("POST", b"/queued", b"queued"))
        answers = list(await asyncio.gather(slow, stale, queued))
    assert answers == [(200, b"slow"), (200, b""), (200, b"queued")]


async def test_a_new_connection_closed_before_answering_is_not_retried() -> None:
    async def hang_up(server: Server, index: int, request: Request,
                      writer: asyncio.StreamWriter) -> bool:
        writer.transport.abort()
        return False

    async with serve(hang_up) as server, pool_for(server) as pool:
        with pytest.raises(BadResponse):
            await pool.request("GET", b"/a", HOST)
        assert len(server.connections) == 1


@pytest.mark.parametrize(("headers", "chunks", "wire"), [
    (HOST, (b"hello ", b"world"), b"6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"),
    ([*HOST, (b"content-length", b"11")], (b"hello ", b"world"), b"hello world"),
], ids=["chunked-without-length", "content-length-passed-through"])
async def test_streams_a_request_body(headers: list[tuple[bytes, bytes]],
                                      chunks: tuple[bytes, ...], wire: bytes) -> None:
    async with serve(echo) as server, pool_for(server) as pool:
        response = await pool.request("POST", b"/a", headers, body_of(*chunks))
        assert await read_all(response) == b"hello world"
        assert server.connections[0][0].wire == wire


async def test_relays_a_chunked_response_decoded_and_reuses_the_connection() -> None:
    async def chunked(server: Server, index: int, request: Request,
                      writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(b"6\r\n world\r\n0\r\n\r\n")
        return True

    async with serve(chunked) as server, pool_for(server) as pool:
        for _ in range(2):
            response = await pool.request("GET", b"/a", HOST)
            assert ("transfer-encoding", "chunked") in [
                (name.decode(), value.decode()) for name, value in response.headers]
            assert await read_all(response) == b"hello world"
        assert len(server.connections) == 1


async def test_head_and_interim_answers_have_no_body() -> None:
    async def handler(server: Server, index: int, request: Request,
                      writer: asyncio.StreamWriter) -> bool:
        if request.method == b"HEAD":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
        return True

    async with serve(handler) as server, pool_for(server) as pool:
        head = await pool.request("HEAD", b"/a", HOST)
        assert (head.status, await read_all(head)) == (200, b"")
        no_content = await pool.request("POST", b"/a", HOST, b"x")
        assert (no_content.status, await read_all(no_content)) == (204, b"")
        assert [len(requests) for requests in server.connections] == [2]


async def test_a_body_sent_after_a_head_answer_is_dropped_with_its_connection() -> None:
    async def wrong(server: Server, index: int, request: Request,
                    writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        return True

    async with serve(wrong) as server, pool_for(server) as pool:
        for _ in range(2):
            head = await pool.request("HEAD", b"/a", HOST)
            assert (head.status, await read_all(head)) == (200, b"")
        assert len(server.connections) == 2


async def test_the_pool_bound_makes_requests_wait_then_fail() -> None:
    release = asyncio.Event()
    held = answer_ok_after(release)

    async with serve(held) as server, pool_for(server, max_connections=2,
                                               connect_timeout=0.2) as pool:
        busy = [asyncio.create_task(pool.request("GET", b"/a", HOST)) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(ConnectFailed):
            await pool.request("GET", b"/a", HOST)
        # A waiter is handed the first connection that comes free.
        waiting = asyncio.create_task(pool.request("GET", b"/b", HOST))
        await asyncio.sleep(0.05)
        release.set()
        for task in [*busy, waiting]:
            assert await read_all(await task) == b"ok"
        assert len(server.connections) == 2 and pool.connections == 2


async def test_a_request_cancelled_while_waiting_for_its_answer_frees_its_connection() -> None:
    release = asyncio.Event()

    async def held_once(server: Server, index: int, request: Request,
                        writer: asyncio.StreamWriter) -> bool:
        if index == 0:
            await release.wait()
            return False
        writer.write(OK)
        return True

    async with serve(held_once) as server, pool_for(server, max_connections=1,
                                                    connect_timeout=0.5) as pool:
        stuck = asyncio.create_task(pool.request("GET", b"/a", HOST))
        await asyncio.sleep(0.05)
        assert pool.connections == 1
        stuck.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stuck
        # Half an exchange: the connection is closed, never reused, and its room is free.
        assert (pool.connections, pool.idle) == (0, 0)
        assert await read_all(await pool.request("GET", b"/b", HOST)) == b"ok"
        release.set()
        assert [len(requests) for requests in server.connections] == [1, 1]


async def test_a_request_cancelled_while_waiting_for_room_leaves_no_waiter_behind() -> None:
    release = asyncio.Event()
    held = answer_ok_after(release)

    async with serve(held) as server, pool_for(server, max_connections=1,
                                               connect_timeout=2.0) as pool:
        busy = asyncio.create_task(pool.request("GET", b"/a", HOST))
        await asyncio.sleep(0.05)
        waiting = asyncio.create_task(pool.request("GET", b"/b", HOST))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        release.set()
        assert await read_all(await busy) == b"ok"
        # The freed connection went idle rather than to the cancelled waiter, and the next
        # request reuses it: the bound is intact.
        assert (pool.connections, pool.idle) == (1, 1)
        assert await read_all(await pool.request("GET", b"/c", HOST)) == b"ok"
        assert [len(requests) for requests in server.connections] == [2]


@pytest.mark.parametrize("chunks", [
    (b"abc",), (b"abcdef", b"ghijk"),
], ids=["shorter-than-content-length", "longer-than-content-length"])
async def test_a_streamed_body_that_breaks_its_length_is_an_upstream_error(
        chunks: tuple[bytes, ...]) -> None:
    async def silent(server: Server, index: int, request: Request,
                     writer: asyncio.StreamWriter) -> bool:
        return True

    async with serve(silent) as server, pool_for(server) as pool:
        with pytest.raises(BodyLengthMismatch) as raised:
            await pool.request("POST", b"/a", [*HOST, (b"content-length", b"8")],
                               body_of(*chunks))
        # An UpstreamError, so the gateway answers it 502 like any broken exchange.
        assert isinstance(raised.value, UpstreamError)
        assert (pool.connections, pool.idle) == (0, 0)


async def test_the_request_target_is_sent_byte_for_byte() -> None:
    """Nothing resolves dot segments or re-encodes on the way (services/gateway/routing.py)."""
    async with serve(answer_ok) as server, pool_for(server) as pool:
        target = b"/x/./y/%2e%2e/z/../q?next=/a/../b"
        assert await read_all(await pool.request("GET", target, HOST)) == b"ok"
    assert server.connections[0][0].head.split(b"\r\n", 1)[0] == b"GET " + target + b" HTTP/1.1"


@pytest.mark.parametrize("url", [
    "https://127.0.0.1:8443", "127.0.0.1:8002", "http://",
], ids=["https", "no-scheme", "no-host"])
def test_the_pool_takes_plain_http_urls_only(url: str) -> None:
    with pytest.raises(ValueError, match="http://host"):
        UpstreamPool(url, max_connections=1, connect_timeout=1.0)


@pytest.mark.parametrize("answer", [
    b"SMTP 220 hello\r\n\r\n",
    b"HTTP/1.1 abc OK\r\n\r\n",
    b"\x00\x01\x02garbage\r\n\r\n",
], ids=["not-http", "bad-status", "binary"])
async def test_garbage_answers_are_bad_responses(answer: bytes) -> None:
    async def handler(server: Server, index: int, request: Request,
                      writer: asyncio.StreamWriter) -> bool:
        writer.write(answer)
        return True

    async with serve(handler) as server, pool_for(server) as pool:
        with pytest.raises(BadResponse):
            await pool.request("GET", b"/a", HOST)
        assert pool.connections == 0


async def test_a_body_broken_mid_way_raises_and_closes() -> None:
    async def truncated(server: Server, index: int, request: Request,
                        writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()
        return False

    async with serve(truncated) as server, pool_for(server) as pool:
        response = await pool.request("GET", b"/a", HOST)
        with pytest.raises(BrokenBody):
            await read_all(response)
        assert pool.connections == 0


async def test_a_body_that_stalls_past_the_read_timeout_is_broken_off() -> None:
    async def stalls(server: Server, index: int, request: Request,
                     writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()
        await asyncio.sleep(0.5)
        return False

    async with serve(stalls) as server, pool_for(server, read_timeout=0.1) as pool:
        response = await pool.request("GET", b"/a", HOST)
        assert await response.read() == (b"abc", True)
        with pytest.raises(BrokenBody):
            await response.read()
        response.close()
        assert pool.connections == 0


async def test_a_refused_connection_is_connect_failed() -> None:
    pool = UpstreamPool(f"http://127.0.0.1:{free_port()}", max_connections=2,
                        connect_timeout=1.0)
    with pytest.raises(ConnectFailed):
        await pool.request("GET", b"/a", HOST)
    assert pool.connections == 0


async def test_extra_bytes_after_an_answer_end_the_connection() -> None:
    async def chatty(server: Server, index: int, request: Request,
                     writer: asyncio.StreamWriter) -> bool:
        writer.write(OK + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra")
        return True

    async with serve(chatty) as server, pool_for(server) as pool:
        for _ in range(2):
            assert await read_all(await pool.request("GET", b"/a", HOST)) == b"ok"
        assert len(server.connections) == 2


# Through the gateway.

@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 abc OK\r\n\r\n", b"SMTP 220 hello\r\n\r\n",
], ids=["bad-status", "not-http"])
async def test_gateway_answers_502_to_a_garbage_status_line(
        gateway_factory: GatewayFactory, answer: bytes) -> None:
    async def handler(server: Server, index: int, request: Request,
                      writer: asyncio.StreamWriter) -> bool:
        writer.write(answer)
        return True

    async with serve(handler) as server, gateway_factory(
            OTESSE_GATEWAY_TOKEN_URL=server.url) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as client:
            response = await client.post("/oauth/token", json={"grant_type": "x"})
    assert response.status_code == 502
    assert response.json()["error"] == "temporarily_unavailable"


async def test_gateway_answers_502_for_a_small_answer_broken_off(
        gateway_factory: GatewayFactory) -> None:
    """An upstream that dies mid-answer (a killed replica): the answer is read whole before its
    head is relayed, so the client gets a clean 502, not a 200 cut short."""
    async def truncated(server: Server, index: int, request: Request,
                        writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()
        return False

    async with serve(truncated) as server, gateway_factory(
            OTESSE_GATEWAY_TOKEN_URL=server.url,
            OTESSE_GATEWAY_AUTHORIZE_URL=server.url) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as client:
            token = await client.post("/oauth/token", content=b"grant_type=refresh_token")
            page = await client.get("/oauth/authorize")
    assert token.status_code == 502
    assert token.json()["error"] == "temporarily_unavailable"
    assert page.status_code == 502
    assert page.headers["content-type"].startswith("text/html")


async def test_gateway_leaves_a_broken_streamed_body_unfinished(
        gateway_factory: GatewayFactory) -> None:
    """A large answer is streamed, its head relayed first: broken off, it is left unfinished so
    that it never looks complete."""
    async def truncated(server: Server, index: int, request: Request,
                        writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\nabc"
                     % (WHOLE_ANSWER_BYTES + 1))
        await writer.drain()
        return False

    async with serve(truncated) as server, gateway_factory(
            OTESSE_GATEWAY_AUTHORIZE_URL=server.url) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get("/oauth/authorize")


async def test_gateway_retries_the_keep_alive_race_for_a_safe_request_only(
        gateway_factory: GatewayFactory) -> None:
    async with serve(race) as server, gateway_factory(
            OTESSE_GATEWAY_TOKEN_URL=server.url) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as client:
            first = await client.get("/.well-known/jwks.json")
            second = await client.get("/.well-known/jwks.json")
            assert (first.status_code, second.status_code) == (200, 200)
            assert [len(requests) for requests in server.connections] == [2, 1]
            # A POST meets the same race on the second connection: read by the upstream, it
            # may have been acted on, so it is answered 503 and never sent twice.
            replay = await client.post("/oauth/token", content=b"grant_type=b")
    assert [len(requests) for requests in server.connections] == [2, 2]
    assert replay.status_code == 503
    assert replay.headers["retry-after"] == "1"
    assert replay.json()["error"] == "temporarily_unavailable"
    sent = [request.wire for requests in server.connections for request in requests]
    assert sent.count(b"grant_type=b") == 1


async def test_gateway_never_answers_502_for_a_connection_closed_unanswered(
        gateway_factory: GatewayFactory) -> None:
    """An upstream that closes kept-alive connections as requests arrive, behind a pool too
    small for the requests at once: every GET is answered by the upstream in the end; every
    POST is answered by the upstream or refused with 503, and none reaches it twice."""
    async with serve(race) as server, gateway_factory(
            OTESSE_GATEWAY_TOKEN_URL=server.url,
            OTESSE_GATEWAY_UPSTREAM_MAX_CONNECTIONS="2",
            OTESSE_GATEWAY_CONNECT_TIMEOUT_SECONDS="5") as gw:
        async with httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
            reads = await asyncio.gather(*(
                client.get("/.well-known/jwks.json") for _ in range(12)))
            posts = await asyncio.gather(*(
                client.post("/oauth/token", content=b"grant_type=%d" % n) for n in range(12)))
    assert [answer.status_code for answer in reads] == [200] * 12
    assert {answer.status_code for answer in posts} <= {200, 503}
    assert any(answer.status_code == 200 for answer in posts)
    for n, answer in enumerate(posts):
        if answer.status_code == 200:
            assert answer.content == b"grant_type=%d" % n
    bodies = [request.wire for requests in server.connections for request in requests
              if request.wire]
    assert len(bodies) == len(set(bodies)), "a POST reached the upstream twice"

"""``python -m bench.gateway_alone``: what the gateway's hop costs, apart from everything else.

In the whole stack the gateway's CPU per request mixes its own work with the machine's other
processes waking each other. This puts four HTTP/1.1 servers on loopback, each answering
``POST /oauth/token`` with the same token-sized JSON body, and drives each in turn with the same
keep-alive load (alternating rounds), reading each server's CPU from ``/proc``:

* ``protocol``: an asyncio protocol around ``httptools``, the parser uvicorn uses (the least an
  asyncio server in Python can spend on a request);
* ``uvicorn``: uvicorn (httptools, uvloop) with a bare ASGI app (what the framing costs every
  service);
* ``gateway``: Otesse's gateway, as ``otesse-auth serve gateway`` runs it (rate limits off), in
  front of a ``protocol`` server standing in for the token service (what the hop costs);
* ``edge``: a sketch of the gateway on its own protocol, in front of the same stand-in: the
  gateway's per-request work done with its own functions (the host, the route, the client
  address through the trusted proxies, a request id, hop-by-hop and internal fields stripped
  both ways, the forwarded fields, ``nosniff``) on ``httptools`` both ways and one pooled
  keep-alive connection per request, without uvicorn, ASGI or the edge's limits and deadlines
  (what a rewrite of the edge could reach, not a server to run).

The load generator is deliberately small (pre-encoded requests, no parsing beyond the length),
so that the servers, not it, take the core they share with it.

    .venv-bench/bin/python -m bench.gateway_alone              # 40000 requests, 16 connections
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import uvloop

from bench import command
from bench.cpu import process_seconds
from bench.ports import free_port
from bench.stack import StackFailed, dying_with_parent

ANSWER = json.dumps({"access_token": "otesse_at_" + "x" * 600, "token_type": "Bearer",
                     "expires_in": 3600, "refresh_token": "otesse_rt_" + "y" * 43,
                     "scope": "bookings:read customers:read"}).encode()
HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: no-store\r\n"
        b"content-length: " + str(len(ANSWER)).encode() + b"\r\n\r\n")
FORM = b"grant_type=refresh_token&refresh_token=otesse_rt_" + b"r" * 43
REQUEST = (b"POST /oauth/token HTTP/1.1\r\nhost: 127.0.0.1\r\n"
           b"content-type: application/x-www-form-urlencoded\r\n"
           b"authorization: Basic " + b"Y" * 80 + b"\r\n"
           b"content-length: " + str(len(FORM)).encode() + b"\r\n\r\n" + FORM)
SERVERS = ("protocol", "uvicorn", "gateway", "edge")
# The servers' output (git-ignored, as every result).
LOG = Path(__file__).resolve().parent / "results" / "gateway-alone.log"
START_SECONDS = 30.0


# -- the servers (each runs as ``python -m bench.gateway_alone --serve KIND PORT``) -----------

class _Answering(asyncio.Protocol):
    def __init__(self) -> None:
        import httptools
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def on_message_complete(self) -> None:
        assert self._transport is not None
        self._transport.write(HEAD + ANSWER)


async def _bare_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"cache-control", b"no-store"),
        (b"content-length", str(len(ANSWER)).encode())]})
    await send({"type": "http.response.body", "body": ANSWER})


class _Parsing(asyncio.Protocol):
    """A connection of the edge sketch: its bytes go through an ``httptools`` parser, which
    calls back with each message's header fields (kept with lowercase names) and body."""

    def __init__(self, parser: type[Any]) -> None:
        self._parser = parser(self)
        self._transport: asyncio.Transport | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def _message(self) -> tuple[list[tuple[bytes, bytes]], bytes]:
        """The message just parsed: its header fields and body (and a fresh start)."""
        headers, body = self._headers, b"".join(self._body)
        self._headers, self._body = [], []
        return headers, body


class _Upstream(_Parsing):
    """One keep-alive connection of the edge sketch to its upstream."""

    def __init__(self) -> None:
        import httptools
        super().__init__(httptools.HttpResponseParser)
        self.answer: asyncio.Future[tuple[int, list[tuple[bytes, bytes]], bytes]] | None = None

    def send(self, request: bytes) -> None:
        assert self._transport is not None
        self._transport.write(request)

    def on_message_complete(self) -> None:
        assert self.answer is not None
        self.answer.set_result((self._parser.get_status_code(), *self._message()))


class _Edge(_Parsing):
    """The edge sketch: one client connection, its requests forwarded one at a time."""

    def __init__(self, upstream_port: int, idle: list[_Upstream]) -> None:
        import httptools

        from services.gateway import hosts
        super().__init__(httptools.HttpRequestParser)
        self._upstream_port = upstream_port
        self._idle = idle
        self._hosts = hosts.HostAllowList.of(("127.0.0.1", "localhost"))
        self._peer = "0.0.0.0"
        self._url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._peer = transport.get_extra_info("peername")[0]

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_message_complete(self) -> None:
        assert self._transport is not None
        self._transport.pause_reading()  # one request at a time, as the gateway
        method = self._parser.get_method().decode()
        target, self._url = self._url or b"/", b""
        headers, body = self._message()
        asyncio.get_running_loop().create_task(self._forward(method, target, headers, body))

    async def _forward(self, method: str, target: bytes, headers: list[tuple[bytes, bytes]],
                       body: bytes) -> None:
        from services.common import internal_headers, request_id
        from services.gateway import forwarded, hop_by_hop, proxy, routing
        assert self._transport is not None
        host = next((value for name, value in headers if name == b"host"), None)
        self._hosts.check(host)
        path = target.partition(b"?")[0].decode("latin-1")
        routing.resolve(method, path)
        client = forwarded.resolve(self._peer, headers, scheme="http", trusted=())
        rid = request_id.new_request_id().encode()
        sent = [(name, value) for name, value in hop_by_hop.strip(
                    headers, also=forwarded.REPLACED | {b"x-request-id"})
                if not internal_headers.is_internal(name)]
        sent += [(b"x-forwarded-for", client.forwarded_for()),
                 (b"x-forwarded-proto", client.proto.encode()), (b"x-request-id", rid),
                 (b"x-forwarded-host", host or b"")]
        head = b"".join([method.encode(), b" ", target, b" HTTP/1.1\r\n",
                         *(name + b": " + value + b"\r\n" for name, value in sent), b"\r\n"])
        loop = asyncio.get_running_loop()
        if self._idle:
            upstream = self._idle.pop()
        else:
            _, upstream = await loop.create_connection(_Upstream, "127.0.0.1",
                                                       self._upstream_port)
        upstream.answer = loop.create_future()
        upstream.send(head + body)
        status, answer_headers, answer = await upstream.answer
        self._idle.append(upstream)
        kept = [(name, value) for name, value in hop_by_hop.strip(
                    answer_headers, also=proxy.OWN_RESPONSE_HEADERS)
                if not internal_headers.is_internal(name)]
        kept += [(b"x-request-id", rid), (b"x-content-type-options", b"nosniff")]
        self._transport.write(b"".join([
            b"HTTP/1.1 %d OK\r\n" % status,
            *(name + b": " + value + b"\r\n" for name, value in kept), b"\r\n", answer]))
        self._transport.resume_reading()


def _serve(kind: str, port: int) -> None:
    if kind.startswith("edge:"):
        upstream_port = int(kind.partition(":")[2])
        idle: list[_Upstream] = []

        async def edge() -> None:
            server = await asyncio.get_running_loop().create_server(
                lambda: _Edge(upstream_port, idle), "127.0.0.1", port)
            await server.serve_forever()

        uvloop.run(edge())
        return
    if kind == "uvicorn":
        import uvicorn
        uvicorn.run(_bare_asgi, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                    log_level="warning", access_log=False, lifespan="off")
        return

    async def protocol() -> None:
        server = await asyncio.get_running_loop().create_server(_Answering, "127.0.0.1", port)
        await server.serve_forever()

    uvloop.run(protocol())


# -- running them ----------------------------------------------------------------------------

@dataclass
class Server:
    name: str
    pid: int
    port: int


@contextmanager
def _process(argv: list[str], env: dict[str, str] | None = None) -> Iterator[int]:
    """A server, its output appended to :data:`LOG`."""
    LOG.parent.mkdir(parents=True, exist_ok=True)
    with LOG.open("ab") as log:
        process = subprocess.Popen(dying_with_parent(argv), env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        yield process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _ready(port: int) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        try:
            status, _ = await _exchange(port)
        except (OSError, asyncio.IncompleteReadError):  # not listening, or not yet serving
            await asyncio.sleep(0.1)
            continue
        if status != 200:
            raise StackFailed(f"the server on port {port} answered {status}")
        return
    raise StackFailed(f"nothing answered on port {port} within {START_SECONDS:g} s (see {LOG})")


async def _exchange(port: int) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(REQUEST)
        head = await reader.readuntil(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), await reader.readexactly(_length(head))
    finally:
        writer.close()


def _length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            return int(line[15:])
    raise StackFailed("an answer without Content-Length")


async def _load(port: int, *, requests: int, connections: int) -> tuple[float, int]:
    """Sends ``requests`` over ``connections`` keep-alive connections; returns the seconds it
    took and how many answers were not 200."""
    failed = 0

    async def connection(count: int) -> None:
        nonlocal failed
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(count):
                writer.write(REQUEST)
                head = await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(_length(head))
                if not head.startswith(b"HTTP/1.1 200 "):
                    failed += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection(requests // connections) for _ in range(connections)))
    return time.perf_counter() - started, failed


@dataclass(frozen=True)
class Round:
    server: str
    requests: int
    seconds: float
    cpu_us: float
    failed: int


async def main(options: argparse.Namespace) -> list[Round]:
    python = str(options.venv / "bin" / "python")
    me = [python, "-m", "bench.gateway_alone", "--serve"]
    ports = {name: free_port() for name in (*SERVERS, "upstream", "admin")}
    gateway_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OTESSE_")},
        "OTESSE_GATEWAY_PORT": str(ports["gateway"]),
        "OTESSE_GATEWAY_ADMIN_PORT": str(ports["admin"]),
        "OTESSE_GATEWAY_TOKEN_URL": f"http://127.0.0.1:{ports['upstream']}",
        "OTESSE_GATEWAY_RATE_LOGIN_PER_IP": "off", "OTESSE_GATEWAY_RATE_TOKEN_PER_IP": "off",
        "OTESSE_GATEWAY_RATE_CLIENT_AUTH_FAILURES_PER_IP": "off",
        # One load generator is one client address.
        "OTESSE_GATEWAY_MAX_REQUESTS_PER_IP": "100000",
        "OTESSE_LOG_LEVEL": "WARNING",
    }
    rounds: list[Round] = []
    with _process([*me, "protocol", str(ports["protocol"])]) as protocol, \
            _process([*me, "uvicorn", str(ports["uvicorn"])]) as uvicorn_pid, \
            _process([*me, "protocol", str(ports["upstream"])]), \
            _process([python, str(options.venv / "bin" / "otesse-auth"), "serve", "gateway"],
                     env=gateway_env) as gateway, \
            _process([*me, f"edge:{ports['upstream']}", str(ports["edge"])]) as edge:
        servers = [Server("protocol", protocol, ports["protocol"]),
                   Server("uvicorn", uvicorn_pid, ports["uvicorn"]),
                   Server("gateway", gateway, ports["gateway"]),
                   Server("edge", edge, ports["edge"])]
        for server in servers:
            await _ready(server.port)
            await _load(server.port, requests=options.connections * 50,
                        connections=options.connections)  # warm-up
        for _ in range(options.rounds):
            for server in servers:
                cpu = process_seconds(server.pid)
                seconds, failed = await _load(server.port, requests=options.requests,
                                              connections=options.connections)
                spent = process_seconds(server.pid) - cpu
                done = options.requests // options.connections * options.connections
                rounds.append(Round(server.name, done, seconds, spent / done * 1e6, failed))
    print(f"POST /oauth/token, {options.requests} requests per round on {options.connections} "
          f"keep-alive connections, medians of {options.rounds} alternating rounds; the servers "
          f"on {Path(python)}:")
    print(f"  {'server':<10} {'requests/s':>11} {'CPU µs/request':>15} {'failed':>7}")
    for name in SERVERS:
        mine = [r for r in rounds if r.server == name]
        print(f"  {name:<10} {statistics.median(r.requests / r.seconds for r in mine):>11.0f} "
              f"{statistics.median(r.cpu_us for r in mine):>15.1f} "
              f"{sum(r.failed for r in mine):>7}")
    return rounds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway_alone",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=40000, metavar="N")
    parser.add_argument("--connections", type=int, default=16, metavar="C")
    parser.add_argument("--rounds", type=int, default=3, metavar="R")
    command.add_venv_argument(parser)
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "PORT"), help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if min(options.requests, options.connections, options.rounds) < 1:
        parser.error("--requests, --connections and --rounds must be at least 1")
    return options


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.serve:
        _serve(arguments.serve[0], int(arguments.serve[1]))
    else:
        try:
            uvloop.run(main(arguments))
        except StackFailed as exc:
            print(f"bench.gateway_alone: {exc}", file=sys.stderr)
            sys.exit(1)

"""``python -m bench.gateway_alone``: what the gateway's hop costs, apart from everything else.

In the whole stack the gateway's CPU per request mixes its own work with the machine's other
processes waking each other. This puts three HTTP/1.1 servers on loopback, each answering
``POST /oauth/token`` with the same token-sized JSON body, and drives each in turn with the same
keep-alive load (alternating rounds), reading each server's CPU from ``/proc``:

* ``protocol``: an asyncio protocol around ``httptools``, the parser uvicorn uses (the least an
  asyncio server in Python can spend on a request);
* ``uvicorn``: uvicorn (httptools, uvloop) with a bare ASGI app (what the framing costs every
  service);
* ``gateway``: Otesse's gateway, as ``otesse-auth serve gateway`` runs it (rate limits off), in
  front of a ``protocol`` server standing in for the token service (what the hop costs).

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
SERVERS = ("protocol", "uvicorn", "gateway")
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


def _serve(kind: str, port: int) -> None:
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
                     env=gateway_env) as gateway:
        servers = [Server("protocol", protocol, ports["protocol"]),
                   Server("uvicorn", uvicorn_pid, ports["uvicorn"]),
                   Server("gateway", gateway, ports["gateway"])]
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

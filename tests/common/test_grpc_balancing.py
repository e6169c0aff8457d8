"""gRPC is balanced per call, not per connection: a channel from ``create_channel`` whose target
names several servers spreads calls over all of them, stops sending to one that drains (health
``NOT_SERVING``) so that its stop fails no call, and reconnects when a server closes old
connections (``grpc.max_connection_age_ms``), which is when it resolves the name again.

The servers are real ones from ``create_server`` on loopback, each answering a one-method
service with its own name and the caller's address, so the test sees who served each call.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import pytest
from grpc import aio

from services.common.grpc_client import create_channel
from services.common.grpc_server import GrpcServer, create_server

SERVICE = "otesse.test.v1.Who"
METHOD = f"/{SERVICE}/Ask"
CLIENTS = 8


Ask = aio.UnaryUnaryMultiCallable[bytes, bytes]
AGE = 30.0


def _asker(channel: aio.Channel) -> Ask:
    ask: Ask = channel.unary_unary(METHOD)
    return ask


def _who_server(name: str, *, age: float, grace: float) -> GrpcServer:
    async def ask(request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
        return f"{name} {context.peer()}".encode()

    def add(server: aio.Server) -> Sequence[str]:
        handler = grpc.method_handlers_generic_handler(SERVICE, {
            "Ask": grpc.unary_unary_rpc_method_handler(ask)})
        server.add_generic_rpc_handlers((handler,))
        return [SERVICE]

    return create_server(service="test", add_servicers=add, host="127.0.0.1", port=0,
                         max_connection_age=age, max_connection_age_grace=grace)


@contextlib.asynccontextmanager
async def replicas(count: int, *, age: float = AGE, grace: float = 5.0,
                   ) -> AsyncIterator[list[GrpcServer]]:
    servers = [_who_server(f"replica-{index}", age=age, grace=grace) for index in range(count)]
    for server in servers:
        await server.start()
    try:
        yield servers
    finally:
        for server in servers:
            await server.stop(0)


def target(servers: list[GrpcServer]) -> str:
    return "ipv4:" + ",".join(f"127.0.0.1:{server.port}" for server in servers)


class Load:
    """``CLIENTS`` tasks calling as fast as they can; who answered, and every failure."""

    def __init__(self, channel: aio.Channel) -> None:
        self._ask = _asker(channel)
        self.served: collections.Counter[str] = collections.Counter()
        self.peers: set[str] = set()
        self.failures: collections.Counter[str] = collections.Counter()
        self._running = True
        self._tasks: list[asyncio.Task[None]] = []

    async def _client(self) -> None:
        while self._running:
            try:
                answer = await self._ask(b"", timeout=5)
            except grpc.aio.AioRpcError as exc:
                self.failures[exc.code().name] += 1
                continue
            name, peer = answer.decode().split(" ", 1)
            self.served[name] += 1
            self.peers.add(peer)

    def __enter__(self) -> Load:
        self._tasks = [asyncio.create_task(self._client()) for _ in range(CLIENTS)]
        return self

    async def stop(self) -> None:
        self._running = False
        await asyncio.gather(*self._tasks)

    def __exit__(self, *exc: object) -> None:
        self._running = False


async def _until(condition: Any, seconds: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def _until_steady(count: Any, seconds: float = 10.0) -> None:
    """Until ``count()`` has not changed for half a second."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    last, since = count(), loop.time()
    while loop.time() - since < 0.5:
        assert loop.time() < deadline, "never steady"
        await asyncio.sleep(0.05)
        if count() != last:
            last, since = count(), loop.time()


async def test_calls_spread_over_every_address_of_the_target() -> None:
    async with replicas(2) as servers:
        channel = create_channel(target(servers), services=(SERVICE,))
        ask = _asker(channel)
        served: collections.Counter[str] = collections.Counter()
        try:
            for _ in range(200):
                answer = await ask(b"", timeout=5)
                served[answer.decode().split(" ")[0]] += 1
        finally:
            await channel.close()
    print(f"calls per replica over one channel: {dict(served)}")
    # Round robin over two ready servers alternates; pick_first would send all 200 to one.
    assert set(served) == {"replica-0", "replica-1"}
    assert min(served.values()) >= 80, served


async def test_a_draining_server_gets_no_new_calls_and_stops_without_failing_one() -> None:
    async with replicas(2) as servers:
        channel = create_channel(target(servers), services=(SERVICE,))
        with Load(channel) as load:
            try:
                await _until(lambda: min(load.served.get(f"replica-{i}", 0)
                                         for i in (0, 1)) >= 50)
                await servers[0].drain()
                # Clients learn NOT_SERVING from their health watch: calls already sent finish,
                # then the count stops.
                await _until_steady(lambda: load.served["replica-0"])
                at_drain = load.served["replica-0"]
                others = load.served["replica-1"]
                await asyncio.sleep(1.0)
                assert load.served["replica-0"] == at_drain, "a draining server got new calls"
                assert load.served["replica-1"] > others + 50
                await servers[0].stop(5.0)
                after_stop = load.served["replica-1"]
                await _until(lambda: load.served["replica-1"] > after_stop + 200)
            finally:
                await load.stop()
                await channel.close()
    print(f"calls per replica: {dict(load.served)}; failures: {dict(load.failures)}")
    assert not load.failures


async def test_old_connections_are_closed_so_clients_reconnect_without_failures() -> None:
    # A short maximum age here; the services use MAX_CONNECTION_AGE_SECONDS.
    async with replicas(2, age=0.3, grace=1.0) as servers:
        channel = create_channel(target(servers), services=(SERVICE,))
        with Load(channel) as load:
            try:
                await asyncio.sleep(2.5)
            finally:
                await load.stop()
                await channel.close()
    print(f"calls per replica: {dict(load.served)}; connections seen: {len(load.peers)}; "
          f"failures: {dict(load.failures)}")
    # One connection per server would show two client addresses; every reconnect adds one.
    assert len(load.peers) >= 6
    assert not load.failures
    assert min(load.served.values()) > 100


@pytest.mark.parametrize("address", ["127.0.0.1:{port}", "dns:///localhost:{port}",
                                     "ipv4:127.0.0.1:{port}"],
                         ids=["host and port", "dns name", "ipv4 list of one"])
async def test_every_address_form_reaches_a_single_server(address: str) -> None:
    async with replicas(1) as (server,):
        channel = create_channel(address.format(port=server.port), services=(SERVICE,))
        try:
            answer = await _asker(channel)(b"", timeout=5)
        finally:
            await channel.close()
    assert answer.startswith(b"replica-0 ")

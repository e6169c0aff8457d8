"""A ``WatchRevocations`` subscriber for tests: a real stream on a real channel, whose events a
background task collects, so a test can act and then wait for what the feed says."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc
from grpc import aio

from otesse.auth.v1 import token_pb2, token_pb2_grpc
from services.common.grpc_client import create_channel


@dataclass
class Watcher:
    events: list[token_pb2.RevocationEvent] = field(default_factory=list)
    error: aio.AioRpcError | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def revocations(self) -> list[token_pb2.Revocation]:
        return [e.revocation for e in self.events if e.WhichOneof("event") == "revocation"]

    @property
    def ids(self) -> set[str]:
        return {revocation.id for revocation in self.revocations}

    @property
    def synced(self) -> list[token_pb2.Synced]:
        return [e.synced for e in self.events if e.WhichOneof("event") == "synced"]

    @property
    def heartbeats(self) -> list[token_pb2.Heartbeat]:
        return [e.heartbeat for e in self.events if e.WhichOneof("event") == "heartbeat"]

    @property
    def cursor(self) -> int:
        """The last cursor this subscriber may resume from."""
        cursor = 0
        for event in self.events:
            kind = event.WhichOneof("event")
            if kind == "revocation" and not event.revocation.snapshot:
                cursor = event.revocation.cursor
            elif kind in ("synced", "heartbeat"):
                cursor = getattr(event, kind).cursor
        return cursor

    async def until(self, condition: Callable[[Watcher], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition(self):
                if self.done.is_set():
                    raise AssertionError(f"the stream ended: {self.error!r}")
                await asyncio.sleep(0.01)


@asynccontextmanager
async def watching(port: int, *, cursor: int = 0, subscriber: str = "test",
                   ) -> AsyncIterator[Watcher]:
    """Subscribes to the token service on ``port`` from ``cursor``; waits for the synced
    marker before yielding."""
    channel = create_channel(f"127.0.0.1:{port}", services=("otesse.auth.v1.TokenService",))
    stub = token_pb2_grpc.TokenServiceStub(channel)
    watcher = Watcher()

    async def collect() -> None:
        try:
            async for event in stub.WatchRevocations(token_pb2.WatchRevocationsRequest(
                    cursor=cursor, subscriber=subscriber)):
                watcher.events.append(event)
        except aio.AioRpcError as exc:
            watcher.error = exc
        finally:
            watcher.done.set()

    task = asyncio.create_task(collect())
    try:
        await watcher.until(lambda w: bool(w.synced) or w.done.is_set())
        yield watcher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await channel.close()


async def stream_error(port: int, request: token_pb2.WatchRevocationsRequest,
                       ) -> grpc.StatusCode:
    """The status a subscription ends with before any event (or OK if it delivered one)."""
    channel = create_channel(f"127.0.0.1:{port}", services=("otesse.auth.v1.TokenService",))
    try:
        call = token_pb2_grpc.TokenServiceStub(channel).WatchRevocations(request)
        try:
            async with asyncio.timeout(10):
                await call.read()
        except aio.AioRpcError as exc:
            return exc.code()
        call.cancel()
        return grpc.StatusCode.OK
    finally:
        await channel.close()

"""``WithCompanion``: a second server in the process that runs only while the app is up (the
token service's public edge beside the service's own port) — started after the app's start,
stopped before the app's stop, with connection limits of its own that never reach the main
server."""

from __future__ import annotations

import asyncio

import httpx
from starlette.types import Message, Receive, Scope, Send

from services.common.connection_limits import ConnectionLimits
from services.common.http import Readiness
from services.common.serve import WithCompanion, http_config
from services.common.uvicorn_patches import SignalFreeServer
from tests.conftest import free_port


class App:
    """Answers its name; records its lifespan in ``events``."""

    def __init__(self, name: str, events: list[str]) -> None:
        self.name = name
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                step = (await receive())["type"].rsplit(".", 1)[1]
                self.events.append(f"{self.name} {step}")
                await send({"type": f"lifespan.{step}.complete"})
                if step == "shutdown":
                    return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": self.name.encode()})


async def test_the_companion_runs_inside_the_apps_life_with_its_own_limits() -> None:
    events: list[str] = []
    readiness = Readiness()
    main_port, companion_port = free_port(), free_port()
    companion = SignalFreeServer(http_config(
        App("edge", events), host="127.0.0.1", port=companion_port, readiness=readiness,
        limits=ConnectionLimits(max_connections=1)))
    main = SignalFreeServer(http_config(WithCompanion(App("service", events), companion),
                                        host="127.0.0.1", port=main_port, readiness=readiness))
    task = asyncio.create_task(main.serve())
    try:
        while not main.started:
            assert not task.done()
            await asyncio.sleep(0.01)
        # The companion listens by the time the main server does.
        assert companion.started
        held = await asyncio.open_connection("127.0.0.1", companion_port)
        await asyncio.sleep(0.05)
        async with httpx.AsyncClient() as http:
            # Its one connection is taken: the companion refuses the next ...
            refused = await http.get(f"http://127.0.0.1:{companion_port}/")
            assert refused.status_code == 503
            # ... and its cap is none of the main server's business.
            answers = await asyncio.gather(*(http.get(f"http://127.0.0.1:{main_port}/")
                                             for _ in range(3)))
            assert [a.text for a in answers] == ["service"] * 3
        held[1].close()
    finally:
        main.should_exit = True
        await task
    assert events == ["service startup", "edge startup", "edge shutdown", "service shutdown"]
    assert not companion.started or companion.should_exit


async def test_a_companion_that_cannot_listen_fails_the_start_and_stops_nothing_twice(
        ) -> None:
    taken = free_port()
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", taken)
    events: list[str] = []
    companion = SignalFreeServer(http_config(App("edge", events), host="127.0.0.1", port=taken,
                                             readiness=Readiness()))
    app = WithCompanion(App("service", events), companion)
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    inbox.put_nowait({"type": "lifespan.startup"})
    answers: list[Message] = []

    async def send(message: Message) -> None:
        answers.append(message)
        if message["type"] == "lifespan.startup.failed":
            inbox.put_nowait({"type": "lifespan.shutdown"})

    try:
        await asyncio.wait_for(app({"type": "lifespan", "asgi": {"version": "3.0"},
                                    "state": {}}, inbox.get, send), timeout=5)
    finally:
        blocker.close()
        await blocker.wait_closed()
    assert answers[0]["type"] == "lifespan.startup.failed"
    assert f"cannot listen on 127.0.0.1:{taken}" in answers[0]["message"]
    # The companion never ran; the app was started, and stops when asked.
    assert not companion.started
    assert events == ["service startup", "service shutdown"]

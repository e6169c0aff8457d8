"""``ByListener``: one server, several listeners, each request to the app of its port, and the
apps' lifespans started in order and stopped in reverse (the token service's edge, which calls
into the token app, starts after it and stops before it)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import uvicorn
from starlette.types import Message, Receive, Scope, Send

from services.common.serve import ByListener, bind
from services.common.uvicorn_patches import SignalFreeServer


class App:
    """Answers its name; records its lifespan in ``events``."""

    def __init__(self, name: str, events: list[str], *, fail: str | None = None) -> None:
        self.name = name
        self.events = events
        self.fail = fail

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                step = message["type"].rsplit(".", 1)[1]
                if self.fail == step:
                    raise RuntimeError(f"{self.name} cannot {step}")
                self.events.append(f"{self.name} {step}")
                await send({"type": f"lifespan.{step}.complete"})
                if step == "shutdown":
                    return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": self.name.encode()})


async def lifespan(app: ByListener, *steps: str) -> list[Message]:
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    answers: list[Message] = []
    for step in steps:
        inbox.put_nowait({"type": f"lifespan.{step}"})

    async def send(message: Message) -> None:
        answers.append(message)

    await asyncio.wait_for(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                               inbox.get, send), timeout=5)
    return answers


async def test_apps_start_in_order_and_stop_in_reverse() -> None:
    events: list[str] = []
    app = ByListener({1: App("service", events), 2: App("edge", events)})
    answers = await lifespan(app, "startup", "shutdown")
    assert [a["type"] for a in answers] == ["lifespan.startup.complete",
                                            "lifespan.shutdown.complete"]
    assert events == ["service startup", "edge startup", "edge shutdown", "service shutdown"]


async def test_an_app_that_cannot_start_stops_the_ones_started_and_fails_the_start() -> None:
    events: list[str] = []
    app = ByListener({1: App("service", events), 2: App("edge", events, fail="startup"),
                      3: App("never", events)})
    answers = await lifespan(app, "startup")
    assert events == ["service startup", "service shutdown"]
    assert [a["type"] for a in answers] == ["lifespan.startup.failed"]
    assert "edge cannot startup" in answers[0]["message"]


async def test_a_failed_stop_is_reported_after_every_app_was_asked_to_stop() -> None:
    events: list[str] = []
    app = ByListener({1: App("service", events), 2: App("edge", events, fail="shutdown")})
    answers = await lifespan(app, "startup", "shutdown")
    assert events == ["service startup", "edge startup", "service shutdown"]
    assert answers[-1]["type"] == "lifespan.shutdown.failed"
    assert "edge cannot shutdown" in answers[-1]["message"]


async def test_each_request_goes_to_the_app_of_its_listener() -> None:
    events: list[str] = []
    first, second = bind("127.0.0.1", 0), bind("127.0.0.1", 0)
    ports = first.getsockname()[1], second.getsockname()[1]
    app = ByListener({ports[0]: App("service", events), ports[1]: App("edge", events)})
    server = SignalFreeServer(uvicorn.Config(app, log_config=None, lifespan="on", loop="none"))
    task = asyncio.create_task(server.serve(sockets=[first, second]))
    try:
        while not server.started:
            assert not task.done()
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient() as http:
            for port, name in zip(ports, ("service", "edge"), strict=True):
                answer = await http.get(f"http://127.0.0.1:{port}/")
                assert answer.text == name
    finally:
        server.should_exit = True
        await task
    assert events == ["service startup", "edge startup", "edge shutdown", "service shutdown"]


async def test_a_request_from_a_listener_it_was_not_given_is_an_error() -> None:
    app = ByListener({1: App("service", [])})

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        raise AssertionError("nothing is answered for an unknown listener")

    with pytest.raises(RuntimeError, match="no app listens"):
        await app({"type": "http", "server": ("127.0.0.1", 9), "path": "/"}, receive, send)

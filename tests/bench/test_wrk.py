"""bench-peer's load generator (bench/wrk.py, bench/wrk_steps.lua), against a real HTTP server
on a loopback port: exactly the requests asked for reach the server, however many connections
ask at once; every answer is checked as bench/compare.py checks it, and a wrong one is an error
with a sample saying why; what each step yields (codes, token pairs, the chains' latest refresh
tokens) comes back; a request never answered ends the step as an error instead of holding it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from bench import wrk
from bench.cpu import CpuMeter, per_request
from bench.load import StepFailed
from tests.conftest import REDIS_URL

REDIRECT_URI = "https://app.example/callback"


@dataclass
class Server:
    """Answers GET with an authorization redirect and POST with a token response; ``twist``
    may change the answer to the n-th request (counted from 1)."""

    twist: Callable[[int, bytes], bytes | None] = lambda n, answer: answer
    requests: list[bytes] = field(default_factory=list)
    url: str = ""
    # Each connection's handler, ended with the server.
    handlers: set[asyncio.Task[None]] = field(default_factory=set)
    # Answers held until this many requests wait (or 0.2 s passed), then sent together.
    burst: int = 1
    _held: list[asyncio.Future[None]] = field(default_factory=list)

    async def _in_burst(self) -> None:
        held = asyncio.get_running_loop().create_future()
        self._held.append(held)
        if len(self._held) >= self.burst:
            for future in self._held:
                if not future.done():
                    future.set_result(None)
            self._held.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(held), 0.2)
        if held in self._held:
            self._held.remove(held)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                lines = head.decode().split("\r\n")
                method, target, _ = lines[0].split(" ")
                length = next((int(line.split(":")[1]) for line in lines
                               if line.lower().startswith("content-length:")), 0)
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                answer = self.twist(len(self.requests), self.answer(method, target, body))
                if answer is None:
                    await asyncio.Event().wait()  # never answered
                    return
                if self.burst > 1:
                    await self._in_burst()
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def answer(self, method: str, target: str, body: bytes) -> bytes:
        if method == "GET":
            state = parse_qs(urlsplit(target).query)["state"][0]
            return (f"HTTP/1.1 302 Found\r\nLocation: {REDIRECT_URI}?code=c-{state}&state="
                    f"{state}\r\nContent-Length: 0\r\n\r\n").encode()
        n = len(self.requests)
        payload = json.dumps({"access_token": f"at_{n}", "refresh_token": f"rt_{n}",
                              "token_type": "Bearer", "expires_in": 3600}).encode()
        return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d"
                b"\r\n\r\n%b" % (len(payload), payload))


def json_answer(answer: bytes, old: bytes, new: bytes) -> bytes:
    """``answer`` with ``old`` replaced in its body, framed again."""
    payload = answer.split(b"\r\n\r\n", 1)[1].replace(old, new)
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d"
            b"\r\n\r\n%b" % (len(payload), payload))


@asynccontextmanager
async def serving(server: Server) -> AsyncIterator[Server]:
    listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    server.url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        listening.close()
        for handler in server.handlers:
            handler.cancel()
        await asyncio.gather(*server.handlers, return_exceptions=True)


def headers(server: Server) -> dict[str, str]:
    return {"Host": server.url.removeprefix("http://")}


async def authorize(server: Server, states: list[str], *, total: int,
                    concurrency: int = 4) -> wrk.Answered:
    return await wrk.run("authorize", "authorize", server.url, path="/auth",
                         headers={**headers(server), "Cookie": "session=s"},
                         lines=[f"/auth?client_id=a&state={s}" for s in states], total=total,
                         concurrency=concurrency, redirect_uri=REDIRECT_URI)


async def token(server: Server, step: wrk.Step, lines: list[str], *, total: int,
                concurrency: int = 4, seconds: int | None = None) -> wrk.Answered:
    return await wrk.run(step, step, server.url, path="/token", headers=headers(server),
                         lines=lines, total=total, concurrency=concurrency,
                         redirect_uri=REDIRECT_URI, prefixes=("at_", "rt_"), seconds=seconds)


async def test_authorize_sends_each_target_once_and_yields_every_code() -> None:
    states = [f"s{i}" for i in range(40)]
    async with serving(Server()) as server:
        answered = await authorize(server, states, total=40, concurrency=8)
    assert answered.result.requests == 40 and answered.result.errors == 0
    assert sorted(answered.outputs) == sorted(f"c-{s}" for s in states)
    sent = sorted(r.split(b" ")[1].decode() for r in server.requests)
    assert sent == sorted(f"/auth?client_id=a&state={s}" for s in states)
    assert all(b"\r\nCookie: session=s\r\n" in r for r in server.requests)
    assert 0 < answered.result.p50_ms <= answered.result.p99_ms


async def test_a_redirect_without_its_state_or_code_is_an_error() -> None:
    def twist(n: int, answer: bytes) -> bytes:
        if n == 3:
            return answer.replace(b"&state=", b"&state=forged")
        if n == 5:
            return (b"HTTP/1.1 302 Found\r\nLocation: " + REDIRECT_URI.encode()
                    + b"?error=access_denied&state=s4\r\nContent-Length: 0\r\n\r\n")
        if n == 7:
            return (b"HTTP/1.1 302 Found\r\nLocation: https://elsewhere/\r\n"
                    b"Content-Length: 0\r\n\r\n")
        return answer

    async with serving(Server(twist)) as server:
        # One connection: the n-th request is the n-th state.
        answered = await authorize(server, [f"s{i}" for i in range(10)], total=10,
                                   concurrency=1)
    assert answered.result.requests == 10 and answered.result.errors == 3
    assert len(answered.outputs) == 7
    samples = " | ".join(answered.result.error_samples)
    assert "state of a request of this run" in samples
    assert "no code in the redirect: access_denied" in samples
    assert "not the app's redirect URI" in samples


async def test_exchange_yields_the_pairs_and_checks_every_token_response() -> None:
    def twist(n: int, answer: bytes) -> bytes:
        if n == 2:
            return json_answer(answer, b'"expires_in": 3600', b'"expires_in": 60')
        if n == 4:
            return json_answer(answer, b'"Bearer"', b'"bearer"')
        if n == 6:
            return (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 26\r\n\r\n"
                    b'{"error": "invalid_grant"}')
        return answer

    bodies = [f"grant_type=authorization_code&code=c{i}" for i in range(12)]
    async with serving(Server(twist)) as server:
        answered = await token(server, "exchange", bodies, total=12)
    assert answered.result.requests == 12 and answered.result.errors == 3
    assert sorted(answered.outputs) == sorted(f"at_{n} rt_{n}" for n in range(1, 13)
                                              if n not in (2, 4, 6))
    assert sorted(r.split(b"\r\n\r\n", 1)[1].decode() for r in server.requests) == sorted(bodies)
    assert "POST answered 400" in " | ".join(answered.result.error_samples)


async def test_refresh_chains_go_on_one_request_at_a_time_and_never_past_the_total() -> None:
    first = [f"rt_{c}" for c in "abcdefgh"]
    chains = list(first)
    # The eight connections' answers arrive together, so all eight ask for one more request
    # in the same turn of wrk's loop while only four are left.
    async with serving(Server(burst=8)) as server:
        for run in range(1, 4):
            answered = await token(server, "refresh", chains, total=12, concurrency=8)
            assert answered.result.errors == 0
            assert len(server.requests) == 12 * run
            chains = list(answered.outputs)
    assert len(set(chains)) == 8
    sent = [r.split(b"refresh_token=", 1)[1].decode() for r in server.requests]
    # Every token is presented once: the eight first ones, then each one answered but the
    # chains' eight latest, which come back to go on with.
    assert sorted(sent) == sorted([*first, *(f"rt_{n}" for n in range(1, 37)
                                             if f"rt_{n}" not in chains)])


async def test_a_request_never_answered_ends_the_step_as_an_error() -> None:
    async with serving(Server(lambda n, answer: None if n == 5 else answer)) as server:
        answered = await token(server, "exchange", [f"code=c{i}" for i in range(10)],
                               total=10, seconds=2)
    assert answered.result.requests == 9 and answered.result.seconds > 0
    assert answered.result.errors == 1
    assert "never answered" in " | ".join(answered.result.error_samples)


async def test_the_inputs_must_match_the_step() -> None:
    with pytest.raises(ValueError, match="cannot send exactly"):
        await wrk.run("exchange", "exchange", "http://127.0.0.1:9", path="/token", headers={},
                      lines=["a"], total=1, concurrency=2, redirect_uri=REDIRECT_URI)
    with pytest.raises(ValueError, match="one chain per connection"):
        await wrk.run("refresh", "refresh", "http://127.0.0.1:9", path="/token", headers={},
                      lines=["a"], total=4, concurrency=2, redirect_uri=REDIRECT_URI)
    with pytest.raises(ValueError, match="line break"):
        await wrk.run("exchange", "exchange", "http://127.0.0.1:9", path="/token", headers={},
                      lines=["a\nb"], total=1, concurrency=1, redirect_uri=REDIRECT_URI)


async def test_a_wrk_that_does_not_end_is_killed_and_fails_its_step(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hung = tmp_path / "wrk"
    hung.write_text(f"#!/bin/sh\necho $$ > {tmp_path / 'pid'}\nexec sleep 60\n")
    hung.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.setattr(wrk, "GRACE_SECONDS", 1)
    with pytest.raises(StepFailed, match="did not end 2 s after it started; it was killed"):
        await wrk.run("exchange", "exchange", "http://127.0.0.1:9", path="/token", headers={},
                      lines=["a"], total=1, concurrency=1, redirect_uri=REDIRECT_URI,
                      seconds=1)
    assert not Path(f"/proc/{(tmp_path / 'pid').read_text().strip()}").exists()


async def test_without_wrk_the_step_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(StepFailed, match="wrk is missing"):
        await wrk.run("exchange", "exchange", "http://127.0.0.1:9", path="/token", headers={},
                      lines=["a"], total=1, concurrency=1, redirect_uri=REDIRECT_URI)


async def test_a_child_that_ended_counts_as_the_load_generators_cpu() -> None:
    """wrk is a child of the process that measures: its CPU time is in ``client`` once it
    has ended (bench/cpu.py)."""
    meter = CpuMeter(services={}, database_name=None, database_url="",
                     redis_url=REDIS_URL)
    await meter.open()
    try:
        before = await meter.snapshot()
        busy = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import time\nt = time.process_time()\n"
            "while time.process_time() - t < 0.3: pass")
        await busy.wait()
        after = await meter.snapshot()
    finally:
        await meter.close()
    assert per_request(before, after, 1)["client"] >= 300


def wrk_processes(url: str) -> list[int]:
    """The wrk processes sending to ``url`` (their command lines name it)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if proc.name.isdigit() and argv[0].endswith(b"wrk") and url.encode() in argv:
            found.append(int(proc.name))
    return found


async def test_a_step_cancelled_ends_its_wrk() -> None:
    """Ctrl-C during a step stops wrk with it: a wrk left behind would go on loading the
    machine (reconnecting as fast as it can once its server is gone)."""
    async with serving(Server(lambda n, answer: None)) as server:
        step = asyncio.create_task(token(server, "exchange", ["code=c"] * 4, total=4))
        async with asyncio.timeout(10):
            while len(server.requests) < 4:
                await asyncio.sleep(0.01)
        assert wrk_processes(server.url)
        step.cancel()
        with pytest.raises(asyncio.CancelledError):
            await step
        assert wrk_processes(server.url) == []

"""Natural batching (services.common.batches): a request alone goes at once and alone; requests
that arrive while every place is taken go together next; each caller gets its own outcome."""
from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from services.common.batches import Batches


class Recorder:
    """A runner that records each batch it is given and holds it until released."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def run(self, items: Sequence[str]) -> list[str | BaseException]:
        self.batches.append(list(items))
        await self.release.wait()
        return [ValueError(item) if item.startswith("bad") else item.upper() for item in items]


def held(*, max_in_flight: int = 1, max_size: int = 32,
         max_wait: float = 1.0) -> tuple[Recorder, Batches[str, str]]:
    """Batches whose runner holds every batch until ``recorder.release`` is set."""
    recorder = Recorder()
    recorder.release.clear()
    return recorder, Batches(recorder.run, kind="test", max_in_flight=max_in_flight,
                             max_size=max_size, max_wait=max_wait)


async def test_a_write_alone_runs_at_once_and_alone() -> None:
    recorder = Recorder()
    batches = Batches(recorder.run, kind="test", max_in_flight=2, max_size=32)

    assert await batches.submit("a") == "A"
    assert await batches.submit("b") == "B"

    assert recorder.batches == [["a"], ["b"]]


async def test_writes_that_arrive_while_every_place_is_taken_go_together_next() -> None:
    recorder, batches = held()

    first = asyncio.create_task(batches.submit("a"))
    await asyncio.sleep(0)
    later = [asyncio.create_task(batches.submit(item)) for item in "bcd"]
    await asyncio.sleep(0.01)
    # The first runs alone; the others wait for it rather than starting statements of their own.
    assert recorder.batches == [["a"]]

    recorder.release.set()
    assert await asyncio.gather(first, *later) == ["A", "B", "C", "D"]
    assert recorder.batches == [["a"], ["b", "c", "d"]]


async def test_a_batch_holds_at_most_max_size_writes() -> None:
    recorder, batches = held(max_size=2)

    tasks = [asyncio.create_task(batches.submit(item)) for item in "abcde"]
    await asyncio.sleep(0)
    recorder.release.set()

    assert await asyncio.gather(*tasks) == ["A", "B", "C", "D", "E"]
    assert recorder.batches == [["a"], ["b", "c"], ["d", "e"]]


async def test_each_writer_gets_its_own_error_and_the_others_their_results() -> None:
    recorder, batches = held()

    tasks = [asyncio.create_task(batches.submit(item)) for item in ("a", "b", "bad-c", "d")]
    await asyncio.sleep(0)
    recorder.release.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)

    assert outcomes[:2] == ["A", "B"] and outcomes[3] == "D"
    assert isinstance(outcomes[2], ValueError) and str(outcomes[2]) == "bad-c"
    assert recorder.batches == [["a"], ["b", "bad-c", "d"]]


async def test_a_failed_statement_fails_its_own_batch_only() -> None:
    calls: list[list[str]] = []
    gate = asyncio.Event()

    async def run(items: Sequence[str]) -> list[str]:
        calls.append(list(items))
        await gate.wait()
        if "b" in items:
            raise ConnectionResetError("the store went away")
        return [item.upper() for item in items]

    batches = Batches(run, kind="test", max_in_flight=1, max_size=2)
    tasks = [asyncio.create_task(batches.submit(item)) for item in "abcd"]
    await asyncio.sleep(0)
    gate.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)

    assert calls == [["a"], ["b", "c"], ["d"]]
    assert outcomes[0] == "A" and outcomes[3] == "D"
    assert all(isinstance(outcome, ConnectionResetError) for outcome in outcomes[1:3])


async def test_a_runner_that_miscounts_fails_every_writer_of_that_batch() -> None:
    async def run(items: Sequence[str]) -> list[str]:
        return ["only one"]

    batches = Batches(run, kind="test", max_in_flight=1, max_size=32)
    tasks = [asyncio.create_task(batches.submit(item)) for item in "abc"]
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)

    assert outcomes[0] == "only one"
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes[1:])


async def test_a_writer_gone_before_its_batch_starts_is_left_out() -> None:
    recorder, batches = held()

    first = asyncio.create_task(batches.submit("a"))
    await asyncio.sleep(0)
    gone = asyncio.create_task(batches.submit("b"))
    kept = asyncio.create_task(batches.submit("c"))
    await asyncio.sleep(0)
    gone.cancel()
    recorder.release.set()

    assert await first == "A" and await kept == "C"
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert recorder.batches == [["a"], ["c"]]


async def test_a_writer_gone_after_its_batch_started_leaves_the_others_their_write() -> None:
    calls: list[list[str]] = []
    gates = [asyncio.Event(), asyncio.Event()]

    async def run(items: Sequence[str]) -> list[str]:
        calls.append(list(items))
        await gates[len(calls) - 1].wait()
        return [item.upper() for item in items]

    batches = Batches(run, kind="test", max_in_flight=1, max_size=32)
    first = asyncio.create_task(batches.submit("x"))
    await asyncio.sleep(0)
    gone = asyncio.create_task(batches.submit("a"))
    kept = asyncio.create_task(batches.submit("b"))
    await asyncio.sleep(0)
    gates[0].set()
    assert await first == "X"
    await asyncio.sleep(0)
    assert calls == [["x"], ["a", "b"]]

    gone.cancel()
    await asyncio.sleep(0)
    gates[1].set()

    # The batch ran to its end: it was "b"'s write too.
    assert await kept == "B"
    with pytest.raises(asyncio.CancelledError):
        await gone


async def test_wait_idle_returns_once_every_batch_has_ended() -> None:
    recorder, batches = held()
    tasks = [asyncio.create_task(batches.submit(item)) for item in "ab"]
    await asyncio.sleep(0)

    idle = asyncio.create_task(batches.wait_idle())
    await asyncio.sleep(0.01)
    assert not idle.done()
    recorder.release.set()
    await asyncio.wait_for(idle, 1.0)

    assert all(task.done() for task in tasks)
    assert recorder.batches == [["a"], ["b"]]


def test_a_batch_needs_room_for_one_write() -> None:
    with pytest.raises(ValueError):
        Batches(Recorder().run, kind="test", max_in_flight=0, max_size=1)
    with pytest.raises(ValueError):
        Batches(Recorder().run, kind="test", max_in_flight=1, max_size=0)


async def test_a_request_that_finds_no_place_in_time_is_told_so_and_leaves_the_queue() -> None:
    # The database has stopped answering: the statements in flight hold their places, and the
    # requests behind them wait no longer than a request waits for a pooled connection.
    recorder, batches = held(max_wait=0.05)

    stuck = asyncio.create_task(batches.submit("a"))
    await asyncio.sleep(0)
    late = [asyncio.create_task(batches.submit(item)) for item in "bc"]
    outcomes = await asyncio.gather(*late, return_exceptions=True)

    assert all(isinstance(outcome, TimeoutError) for outcome in outcomes)
    assert not stuck.done()
    recorder.release.set()
    # Once the statement ends, the ones that timed out are not sent after all.
    assert await stuck == "A"
    after = await batches.submit("d")
    assert after == "D"
    assert recorder.batches == [["a"], ["d"]]


async def test_a_started_batch_is_not_cut_short_by_the_wait_bound() -> None:
    recorder, batches = held(max_wait=0.05)

    first = asyncio.create_task(batches.submit("a"))
    await asyncio.sleep(0)
    second = asyncio.create_task(batches.submit("b"))
    await asyncio.sleep(0.01)
    recorder.release.set()
    await asyncio.sleep(0)
    recorder.release.clear()
    # "b" has started (its batch is held by the runner) and waits past max_wait unharmed.
    await asyncio.sleep(0.1)
    assert recorder.batches == [["a"], ["b"]] and not second.done()
    recorder.release.set()

    assert await first == "A" and await second == "B"

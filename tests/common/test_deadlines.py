"""services.common.deadlines: coarse timeouts that behave as ``asyncio.timeout`` does, a tick
late at most, and cost nothing while nothing waits."""

from __future__ import annotations

import asyncio
import time

import pytest
import uvloop

from services.common.deadlines import TICK, Deadlines


async def test_a_block_past_its_deadline_ends_with_timeout_error_a_tick_late_at_most() -> None:
    deadlines = Deadlines()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with deadlines.within(0.2) as block:
            await asyncio.sleep(5)
    took = time.monotonic() - started
    assert block.expired
    assert 0.2 <= took < 0.2 + TICK + 0.25, took
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the cancellation was withdrawn
    assert len(deadlines) == 0


async def test_a_block_in_time_is_left_alone_and_the_timer_stops() -> None:
    deadlines = Deadlines()
    async with deadlines.within(0.5) as block:
        await asyncio.sleep(0.01)
        assert len(deadlines) == 1
    assert not block.expired and len(deadlines) == 0
    await asyncio.sleep(TICK * 3)
    assert deadlines._timer is None  # nothing registered: no timer runs
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_someone_elses_cancellation_stays_a_cancellation() -> None:
    deadlines = Deadlines()

    async def guarded() -> None:
        async with deadlines.within(10):
            await asyncio.sleep(5)

    task = asyncio.create_task(guarded())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(deadlines) == 0


async def test_an_inner_deadline_ends_only_its_own_block() -> None:
    deadlines = Deadlines()
    async with deadlines.within(5) as outer:
        with pytest.raises(TimeoutError):
            async with deadlines.within(0.1):
                await asyncio.sleep(5)
        await asyncio.sleep(0.01)  # the outer block goes on
    assert not outer.expired


async def test_many_blocks_each_end_at_their_own_deadline() -> None:
    deadlines = Deadlines()

    async def one(seconds: float) -> tuple[float, bool]:
        started = time.monotonic()
        try:
            async with deadlines.within(seconds):
                await asyncio.sleep(0.4)
        except TimeoutError:
            return time.monotonic() - started, True
        return time.monotonic() - started, False

    results = await asyncio.gather(*(one(0.1 + 0.05 * (i % 3)) for i in range(30)),
                                   *(one(2.0) for _ in range(10)))
    for index, (took, timed_out) in enumerate(results[:30]):
        limit = 0.1 + 0.05 * (index % 3)
        assert timed_out and limit <= took < limit + TICK + 0.25, (index, took)
    assert all(not timed_out for _, timed_out in results[30:])
    assert len(deadlines) == 0


def test_one_registry_keeps_time_on_every_loop_it_is_used_from() -> None:
    """A registry outliving its loop (a test's, a restarted service's) arms its timer again
    on the next one, instead of waiting for a timer that will never run."""
    deadlines = Deadlines()

    async def overrun() -> bool:
        try:
            async with deadlines.within(0.1):
                await asyncio.sleep(2)
        except TimeoutError:
            return True
        return False

    async def leave_a_block_running() -> None:
        task = asyncio.create_task(overrun())
        await asyncio.sleep(0.01)
        task.cancel()  # the loop ends while the registry's timer is armed on it

    asyncio.run(leave_a_block_running())
    assert uvloop.run(overrun())
    assert asyncio.run(overrun())

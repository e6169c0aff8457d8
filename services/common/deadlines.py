"""Coarse timeouts for the hot paths: ``async with deadlines.within(seconds):``.

``asyncio.timeout`` arms a timer on the event loop for every block and disarms it on the way
out (with uvloop, a libuv timer started and stopped each time). On the gateway's path every
request enters two such blocks, its body's and its upstream's, and in a benchmark of the
gateway alone (bench/README.md) those two cost about 15 µs of a request's 160. Here a block only
registers itself, with its deadline, in a dict; one timer per loop, running only while some
block is registered, looks every :data:`TICK` seconds and cancels the task of each block past
its deadline, and the block's exit turns that cancellation into :class:`TimeoutError`, exactly
as ``asyncio.timeout`` does (Python 3.11: the task's cancellation is withdrawn, and the error
raised only if nothing else asked for it). A block therefore ends between its deadline and
:data:`TICK` later: for timeouts of a second or more (the gateway's are 10 s and 30 s by
default), not for fine timing.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

# How often the registered blocks are looked at, in seconds: how late a timeout may fire.
TICK = 0.05


class Deadlines:
    """The registry of one service: its blocks, and the timer that looks at them."""

    def __init__(self, tick: float = TICK) -> None:
        self._tick = tick
        # Each block in progress and when it expires (on its loop's clock).
        self._live: dict[_Within, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def within(self, seconds: float) -> _Within:
        """A block that must end within ``seconds`` (then :class:`TimeoutError`)."""
        return _Within(self, seconds)

    def _enter(self, block: _Within, loop: asyncio.AbstractEventLoop) -> None:
        self._live[block] = loop.time() + block.seconds
        if self._timer is None or self._timer_loop is not loop:
            # None running, or one on a loop that is gone (a test's earlier loop).
            self._timer = loop.call_later(self._tick, self._sweep)
            self._timer_loop = loop

    def _leave(self, block: _Within) -> None:
        self._live.pop(block, None)

    def _sweep(self) -> None:
        self._timer = None
        loop = self._timer_loop
        assert loop is not None
        now = loop.time()
        due = [block for block, when in self._live.items() if when <= now]
        for block in due:
            del self._live[block]
            block.expire()
        if self._live:
            self._timer = loop.call_later(self._tick, self._sweep)

    def __len__(self) -> int:
        """Blocks in progress."""
        return len(self._live)


class _Within:
    __slots__ = ("_deadlines", "_expired", "_task", "seconds")

    def __init__(self, deadlines: Deadlines, seconds: float) -> None:
        self._deadlines = deadlines
        self.seconds = seconds
        self._task: asyncio.Task[object] | None = None
        self._expired = False

    async def __aenter__(self) -> _Within:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("a deadline needs a task")
        self._task = task
        self._deadlines._enter(self, loop)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, failure: BaseException | None,
                        traceback: TracebackType | None) -> None:
        self._deadlines._leave(self)
        if self._expired:
            assert self._task is not None
            # As asyncio.timeout (3.11): this block's cancellation is withdrawn; it becomes a
            # TimeoutError unless someone else cancelled the task too.
            if self._task.uncancel() == 0 and kind is asyncio.CancelledError:
                raise TimeoutError

    def expire(self) -> None:
        assert self._task is not None
        self._expired = True
        self._task.cancel()

    @property
    def expired(self) -> bool:
        return self._expired

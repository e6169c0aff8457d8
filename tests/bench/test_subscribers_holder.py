"""The bench waits for its subscribers' holder by what the holder prints: a line before
``current`` is not the answer, and a holder that ends first fails the step with its exit status
and what it printed, never as a silent "never became current"."""

from __future__ import annotations

import asyncio
import sys

import pytest

from bench.load import StepFailed
from bench.local_validation import Bench


async def holder(script: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, "-c", script,
                                                stdout=asyncio.subprocess.PIPE)


async def test_a_line_before_current_is_not_taken_for_the_answer() -> None:
    process = await holder("import sys, time\nprint('a library speaking')\n"
                           "print('current', flush=True)\ntime.sleep(30)")
    try:
        await Bench.subscribers_current(process)
        assert process.returncode is None
    finally:
        process.terminate()
        await process.wait()


async def test_a_holder_that_ends_first_fails_with_its_status_and_output() -> None:
    process = await holder("import sys\nprint('cannot subscribe')\nsys.exit(3)")
    with pytest.raises(StepFailed, match=r"ended with status 3 .*'cannot subscribe'"):
        await Bench.subscribers_current(process)

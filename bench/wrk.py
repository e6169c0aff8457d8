"""The load generator of ``make bench-peer``: each HTTP step run by ``wrk`` (C, its script
LuaJIT: ``bench/wrk_steps.lua``) instead of this process's asyncio client.

The generator shares the cores with the servers it measures, and issue #13 bounds its own CPU
at 0.15 ms per request. The asyncio client (:mod:`bench.http1`) spends 0.09–0.21 ms per request
depending on the machine, most of it the interpreter's own work per answer; wrk spends a few
hundredths of a millisecond for the same requests, the same checks and the same outputs.

Same as :func:`bench.load.run`: C connections in a closed loop, exactly ``total`` requests,
each answer checked (a wrong one is an error with a sample of why), p50 and p99 of every
request's latency. wrk is a child of this process, so its CPU time counts in the ``client``
figure (:mod:`bench.cpu`) once it has ended.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bench.load import Result, StepFailed

SCRIPT = Path(__file__).resolve().parent / "wrk_steps.lua"
Step = Literal["authorize", "exchange", "refresh"]
# How long past its -d a wrk may take to end before it is killed and the step fails.
GRACE_SECONDS = 30


def wrk() -> str:
    """The ``wrk`` executable; :class:`StepFailed` saying how to get it when it is missing."""
    found = shutil.which("wrk")
    if found is None:
        raise StepFailed("wrk is missing: install it (Debian's wrk package; "
                         "make wrk does)")
    return found


@dataclass(frozen=True)
class Answered:
    result: Result
    # authorize: the codes, in the order answered; exchange: "access refresh" pairs; refresh:
    # each chain's latest refresh token, to go on with.
    outputs: tuple[str, ...]


async def run(name: str, step: Step, base_url: str, *, path: str,
              headers: dict[str, str], lines: Sequence[str], total: int, concurrency: int,
              redirect_uri: str, prefixes: tuple[str, str] = ("", ""),
              seconds: int | None = None) -> Answered:
    """``total`` requests of ``step`` from ``concurrency`` connections to ``base_url``.

    ``lines``: authorize, the request targets (``path?query``, each with a state of its own);
    exchange, the form bodies; refresh, the first refresh token of each chain (one per
    connection). ``seconds``: how long the step may take before the requests not answered
    yet are errors (default: the time of 25 requests a second, at least 30 s)."""
    if not 0 < concurrency <= total:
        raise ValueError(f"{concurrency} connections cannot send exactly {total} requests")
    if step == "refresh" and len(lines) != concurrency:
        raise ValueError("refresh needs one chain per connection")
    if step != "refresh" and len(lines) < total:
        raise ValueError(f"{total} requests need as many inputs, not {len(lines)}")
    if any("\n" in line or "\r" in line for line in lines):
        raise ValueError("an input line holds a line break")
    with tempfile.TemporaryDirectory(prefix="otesse-wrk-") as folder:
        given, taken = Path(folder) / "in", Path(folder) / "out"
        given.write_text("".join(f"{line}\n" for line in lines))
        pairs = [part for item in headers.items() for part in item]
        # A request never answered (lost, timed out) would hold the step: wrk ends it after
        # this long, and the requests never answered are errors.
        seconds = seconds or max(30, total // 25)
        process = await asyncio.create_subprocess_exec(
            wrk(), "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "30s",
            "-s", str(SCRIPT), base_url, "--", step, str(total), str(given), str(taken),
            redirect_uri, *prefixes, path, *pairs,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        assert process.stderr is not None
        complaints: list[str] = []
        try:
            async with asyncio.timeout(seconds + GRACE_SECONDS):
                while line := await process.stderr.readline():
                    if line == b"answered\n":
                        # The last answer is in: wrk's main thread stops sleeping at SIGINT.
                        process.send_signal(signal.SIGINT)
                    else:
                        complaints.append(line.decode(errors="replace"))
                await process.wait()
        except TimeoutError:
            raise StepFailed(f"wrk did not end {seconds + GRACE_SECONDS} s after it started; "
                             "it was killed") from None
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        if process.returncode != 0 or not taken.exists():
            raise StepFailed(f"wrk ended with status {process.returncode}: "
                             f"{''.join(complaints)[-300:]}")
        first, *rest = taken.read_text().splitlines()
    answered, errors, duration_us, p50_us, p99_us, broken = (int(f) for f in first.split())
    samples = tuple(line[7:] for line in rest if line.startswith("sample "))
    outputs = tuple(line[4:] for line in rest if line.startswith("out "))
    # What went wrong with the run as a whole first, then the first answers that were wrong.
    if answered < total:
        samples = (f"{total - answered} requests never answered", *samples)
    if broken:
        samples = (f"{broken} connections failed (connect, read, write or timeout)", *samples)
    result = Result(name, answered, errors + broken + max(0, total - answered),
                    duration_us / 1e6, p50_us / 1000, p99_us / 1000, concurrency, samples[:3])
    return Answered(result, outputs)

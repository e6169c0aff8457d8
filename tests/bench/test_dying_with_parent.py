"""``bench.stack.dying_with_parent``: a server a benchmark starts stops when the benchmark is
killed outright, is the very process the benchmark started (its CPU is read by that id), and
is started without running Python between fork and exec."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.stack import dying_with_parent

ROOT = Path(__file__).resolve().parents[2]
# The "benchmark": starts a sleeping child through the guard, prints its id and waits.
PARENT = """
import subprocess, sys, time
from bench.stack import dying_with_parent
child = subprocess.Popen(dying_with_parent([sys.executable, "-c", "import time; time.sleep(60)"]))
print(child.pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_the_child_stops_when_its_parent_is_killed_outright() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        time.sleep(0.5)  # the guard has executed the command by now
        assert _alive(child)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), "the child outlived the benchmark that started it"
    finally:
        parent.stdout.close()
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def test_the_command_runs_in_the_process_started(tmp_path: Path) -> None:
    # The id the benchmark holds is the server's: the guard executes it in its own place.
    out = tmp_path / "pid"
    process = subprocess.Popen(dying_with_parent(
        [sys.executable, "-c", f"import os; open({str(out)!r}, 'w').write(str(os.getpid()))"]))
    assert process.wait(10) == 0
    assert int(out.read_text()) == process.pid


def test_a_guard_whose_parent_is_gone_does_not_start_the_command(tmp_path: Path) -> None:
    out = tmp_path / "ran"
    argv = dying_with_parent([sys.executable, "-c", f"open({str(out)!r}, 'w')"])
    argv[3] = "1"  # the parent it should have: not this process (init adopted it)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    assert result.returncode == 1
    assert "has gone" in result.stderr
    assert not out.exists()


def test_no_python_runs_between_fork_and_exec() -> None:
    # A preexec_fn makes subprocess fork (not vfork) and run Python in the child, which can hang
    # in a process with gRPC's threads: the guard runs in the new interpreter instead.
    argv = dying_with_parent([sys.executable, "-c", "pass"])
    assert argv[:2] == [sys.executable, "-c"]
    assert "PR_SET_PDEATHSIG" in argv[2] and "execv" in argv[2]
    for path in (ROOT / "bench").glob("*.py"):
        assert "preexec_fn=" not in path.read_text(), path

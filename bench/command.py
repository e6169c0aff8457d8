"""What the three bench commands (``python -m bench``, ``bench.compare``, ``bench.soak``) share:
the store and load arguments, progress lines, SIGTERM treated as Ctrl-C, and how a failed or
interrupted run ends (one line on standard error; exit 1 or 130)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from bench.stack import DATABASE_URL, REDIS_URL, THIS_VENV, AsInProduction

# What a run returns when it was interrupted (128 + SIGINT, as a shell reports Ctrl-C).
INTERRUPTED = 130


def add_store_arguments(parser: argparse.ArgumentParser, *, database: str) -> None:
    """``--database-url`` (``database`` says whose, and that it is created then dropped) and
    ``--redis-url``."""
    parser.add_argument("--database-url", default=DATABASE_URL,
                        help=f"{database}, created then dropped (default {DATABASE_URL})")
    parser.add_argument("--redis-url", default=REDIS_URL, help=f"default {REDIS_URL}")


def add_load_arguments(parser: argparse.ArgumentParser, *, requests: int, concurrency: int,
                       requests_help: str = "") -> None:
    """``--requests``, ``--concurrency`` and ``--warmup`` (see :func:`warmup`)."""
    parser.add_argument("--requests", type=int, default=requests, metavar="N",
                        help=f"requests per measurement (default {requests}{requests_help})")
    parser.add_argument("--concurrency", type=int, default=concurrency, metavar="C",
                        help=f"requests in flight at once, and refresh chains "
                             f"(default {concurrency})")
    parser.add_argument("--warmup", type=int, default=None, metavar="W",
                        help="requests before each measurement (default N/10, at least C)")


def add_production_arguments(parser: argparse.ArgumentParser) -> None:
    """``--limits`` and ``--access-logs`` (:class:`bench.stack.AsInProduction`)."""
    parser.add_argument("--limits", action="store_true",
                        help="run Otesse with its rate limits on, as in production (every "
                             "check made, with bounds no run reaches); default off")
    parser.add_argument("--access-logs", action="store_true",
                        help="run Otesse's services at log level INFO, as in production (an "
                             "access line per request); default WARNING")


def add_venv_argument(parser: argparse.ArgumentParser) -> None:
    """``--venv``: the virtualenv whose interpreter runs Otesse's services."""
    parser.add_argument("--venv", type=Path, default=THIS_VENV, metavar="PATH",
                        help="the virtualenv whose interpreter runs Otesse's services (default: "
                             f"the one this command runs in, {THIS_VENV.name}; the make targets "
                             "run in .venv-bench, Debian's optimized python3, as production's "
                             "image runs an optimized build)")


def as_in_production(args: argparse.Namespace) -> AsInProduction:
    return AsInProduction(limits=bool(args.limits), access_logs=bool(args.access_logs))


def warmup(args: argparse.Namespace) -> int:
    """The warm-up requests: ``--warmup``, else a tenth of the requests but at least one per
    worker, so every connection is open before anything is measured."""
    if args.warmup is not None:
        return int(args.warmup)
    return max(int(args.concurrency), int(args.requests) // 10)


def say(text: str, *, quiet: bool) -> None:
    """Progress: on standard error when standard output is JSON."""
    print(text, file=sys.stderr if quiet else sys.stdout, flush=True)


def cancel_on_sigterm() -> None:
    """SIGTERM cancels the running command as Ctrl-C does, so its stack is stopped and its
    database dropped on the way out."""
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("cancel_on_sigterm() runs inside the command's task")
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)


def failed(command: str, exc: Exception) -> int:
    print(f"{command}: {exc}", file=sys.stderr)
    return 1


def interrupted(command: str, cleaned_up: str) -> int:
    print(f"{command}: interrupted; {cleaned_up}", file=sys.stderr)
    return INTERRUPTED

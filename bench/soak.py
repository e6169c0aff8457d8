"""``python -m bench.soak`` (``make soak``): the mixed flow at a steady rate for minutes, on a
stack of its own; memory, open files and connections must stay flat (issue #12 item 2).

Starts the stack as ``make bench`` does (:mod:`bench.stack`) with several users, each with an
app of their own, runs whole flows at a steady rate (:mod:`bench.steady`), prints a row every
few seconds, and at the end passes or fails: zero errors; each service's resident memory grows
less than 10 % from the first minute after the warm-up to the last minute; open file
descriptors and Postgres connections flat. Writes ``bench/results/soak.json`` and a chart of
p50/p99 and memory over time, ``bench/results/soak.svg``. The exit code is 0 only when every
check passed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import uvloop

from bench import command, report
from bench.plot import Panel, Series, Span, chart
from bench.stack import (
    REDIS_PREFIX,
    SERVICES,
    StackFailed,
    interpreter,
    running_stack,
)
from bench.steady import (
    STEPS,
    Check,
    FallingBehind,
    Plan,
    Run,
    Sample,
    Target,
    drive,
    judge,
    windows,
)

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_MINUTES = 10.0
DEFAULT_RATE = 20.0
DEFAULT_CLIENTS = 4
DEFAULT_WORKERS = 16
DEFAULT_REFRESHES = 3
DEFAULT_EVERY = 10.0
# Before and after the load: longer than every keep-alive in the stack (uvicorn's 5 s).
REST_SECONDS = 8.0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=DEFAULT_MINUTES, metavar="N",
                        help=f"how long the load runs (default {DEFAULT_MINUTES:g})")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, metavar="F",
                        help=f"whole flows started per second, over all clients (default "
                             f"{DEFAULT_RATE:g}; each is {DEFAULT_REFRESHES + 4} requests "
                             "with the default --refreshes)")
    parser.add_argument("--clients", type=int, default=DEFAULT_CLIENTS, metavar="K",
                        help=f"users, each with an app of their own (default {DEFAULT_CLIENTS})")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, metavar="W",
                        help=f"flows in progress at once at most (default {DEFAULT_WORKERS})")
    parser.add_argument("--refreshes", type=int, default=DEFAULT_REFRESHES, metavar="R",
                        help=f"refreshes per flow, each with the last refresh token "
                             f"(default {DEFAULT_REFRESHES})")
    parser.add_argument("--every", type=float, default=DEFAULT_EVERY, metavar="S",
                        help=f"seconds between rows (default {DEFAULT_EVERY:g})")
    command.add_venv_argument(parser)
    command.add_store_arguments(parser, database="its own database")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0 or args.every <= 0:
        parser.error("--minutes, --rate and --every must be positive")
    if min(args.clients, args.workers) < 1 or args.refreshes < 0:
        parser.error("--clients and --workers must be at least 1, --refreshes at least 0")
    if args.minutes * 60 < args.every * 10:
        parser.error("the run must last at least ten rows (--minutes × 60 ≥ 10 × --every)")
    return args


def header(pids: dict[str, int]) -> str:
    steps = "".join(f"{s:>14}" for s in STEPS)
    names = "".join(f"{n[:9]:>10}" for n in pids)
    return (f"{'':>6} {'':>7} {'':>5} {'p50/p99 ms':>14}{'':>{14 * (len(STEPS) - 1)}}  "
            f"{'RSS MiB':>10}{'':>{10 * (len(pids) - 1)}}  {'open fds':>10}"
            f"{'':>{10 * (len(pids) - 1)}}  {'pg':>4} {'redis':>9}\n"
            f"{'time':>6} {'req/s':>7} {'err':>5} {steps}  {names}  {names}  {'conn':>4} "
            f"{'MiB/keys':>9}")


def row(sample: Sample) -> str:
    cells = "".join(
        f"{sample.latency[s][0]:>6.1f}/{sample.latency[s][1]:<7.1f}" if s in sample.latency
        else f"{'–':>14}" for s in STEPS)
    rss = "".join(f"{v / 1024:>10.1f}" for v in sample.rss_kib.values())
    fds = "".join(f"{v:>10}" for v in sample.fds.values())
    late = f"  ({sample.late} flows late)" if sample.late else ""
    return (f"{sample.t:>5.0f}s {sample.rps:>7.1f} {sample.errors:>5} {cells}  {rss}  {fds}  "
            f"{sample.pg_connections:>4} {sample.redis_used_bytes / 2**20:>5.1f}/"
            f"{sample.redis_keys:<4}{late}")


def verdict_lines(checks: list[Check]) -> list[str]:
    lines = [f"  {'PASS' if c.passed else 'FAIL'}  {c.name:<24} {c.detail}" for c in checks]
    passed = all(c.passed for c in checks)
    lines.append("Soak passed." if passed else "Soak FAILED.")
    return lines


def svg(run: Run, title: str) -> str:
    plan = run.plan
    first, last = windows(run)
    spans = [Span("warm-up", 0.0, plan.warmup, "#f0f0f0")]
    if first and last:
        spans += [Span("first window", plan.warmup, plan.warmup + plan.window, "#e3eefa"),
                  Span("last window", plan.seconds - plan.window, plan.seconds, "#e3eefa")]
    latency = []
    for colour, step in enumerate(STEPS):
        for dashed, (label, index) in enumerate((("p50", 0), ("p99", 1))):
            points = [(s.t, s.latency[step][index]) for s in run.samples if step in s.latency]
            latency.append(Series(f"{step} {label}", points, colour, bool(dashed)))
    names = list(run.samples[0].rss_kib) if run.samples else []
    memory = [Series(name, [(s.t, s.rss_kib[name] / 1024) for s in run.samples], colour)
              for colour, name in enumerate(names)]
    return chart(title, "seconds since the load started", [
        Panel("Latency per step: p50 solid, p99 dashed", "ms", latency, spans),
        Panel("Resident memory per service (VmRSS)", "MiB", memory, spans)])


def document(run: Run, checks: list[Check], args: argparse.Namespace,
             before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    plan = run.plan
    return {
        "plan": {"seconds": plan.seconds, "rate_flows_per_second": plan.rate,
                 "clients": args.clients, "workers": plan.workers,
                 "refreshes_per_flow": plan.refreshes, "every_seconds": plan.every,
                 "warmup_seconds": plan.warmup, "window_seconds": plan.window},
        "machine": {**before, "load_average_after": after["load_average"]},
        "samples": [s.as_json() for s in run.samples],
        "open_files_at_rest": {
            moment: {"fds": rest.fds, "store_connections": rest.store_sockets}
            for moment, rest in (("before", run.rest_before), ("after", run.rest_after))
            if rest is not None},
        "errors": run.errors,
        "error_samples": run.error_samples,
        "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in checks],
        "passed": all(c.passed for c in checks),
    }


async def main(argv: list[str]) -> int:
    args = parse(argv)
    command.cancel_on_sigterm()
    plan = Plan(seconds=args.minutes * 60, every=args.every, rate=args.rate,
                workers=args.workers, refreshes=args.refreshes, rest=REST_SECONDS)
    before = report.machine()
    print(f"soak: starting the stack on {interpreter(args.venv)} (load average "
          f"{before['load_average'][0]})", flush=True)
    try:
        async with running_stack(database_url=args.database_url, redis_url=args.redis_url,
                                 log_path=RESULTS / "soak-stack.log",
                                 clients=args.clients, venv=args.venv) as stack:
            pids = {name: stack.pids[name] for name in SERVICES}
            target = Target(gateway_url=stack.gateway_url, token_url=stack.token_public_url,
                            token_grpc=stack.token_grpc,
                            bookings_url=stack.bookings_url, clients=stack.clients, pids=pids,
                            database_url=args.database_url, database_name=stack.database_name,
                            redis_url=args.redis_url, redis_prefix=REDIS_PREFIX)
            print(f"soak: {args.minutes:g} min of {args.rate:g} flows/s ({args.clients} "
                  f"clients, {args.refreshes} refreshes per flow, at most {args.workers} at "
                  f"once); warm-up {plan.warmup:.0f} s, windows of {plan.window:.0f} s",
                  flush=True)
            print(header(pids), flush=True)
            run = await drive(target, plan, lambda s: print(row(s), flush=True))
    except (StackFailed, FallingBehind) as exc:
        return command.failed("soak", exc)
    except asyncio.CancelledError:
        return command.interrupted("soak", "the stack is stopped and its database dropped")
    after = report.machine()
    checks = judge(run)
    for sample in run.error_samples[:10]:
        print(f"  error: {sample}")
    print("\n".join(verdict_lines(checks)))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak.json").write_text(
        json.dumps(document(run, checks, args, before, after), indent=2) + "\n")
    (RESULTS / "soak.svg").write_text(svg(run, f"Soak: {args.minutes:g} min, {args.rate:g} "
                                               f"flows/s, {args.clients} clients"))
    print(f"Load average after: {' '.join(map(str, after['load_average']))}; results in "
          f"{RESULTS / 'soak.json'}, chart in {RESULTS / 'soak.svg'}")
    return 0 if all(c.passed for c in checks) else 1


if __name__ == "__main__":
    sys.exit(uvloop.run(main(sys.argv[1:])))

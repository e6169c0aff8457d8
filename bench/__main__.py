"""``python -m bench`` (``make bench``): the whole flow's throughput and latency.

Starts the whole stack as real processes on loopback (:mod:`bench.stack`), signs a user in and
approves an app once, measures each step of the flow (:mod:`bench.measure`), prints the results
(``--json`` for JSON), writes them to ``bench/results/latest.json`` and stops everything. With
``--duration S`` it then runs whole flows back to back for S seconds and checks that no
service's resident memory grows (:mod:`bench.steady`). The exit code is 1 when any request
failed (warm-ups included), memory grew, or the stack would not start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import uvloop

from bench import command, report
from bench.cpu import CpuMeter
from bench.load import StepFailed
from bench.measure import Measurements, Options, measure_all
from bench.stack import REDIS_PREFIX, Stack, StackFailed, interpreter, running_stack
from bench.steady import RSS_GROWTH_LIMIT, Check, Plan, Run, Target, drive, judge
from bench.stores import store_touches

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_REQUESTS = 5000
DEFAULT_CONCURRENCY = 16
STEADY_REFRESHES = 3


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    command.add_load_arguments(parser, requests=DEFAULT_REQUESTS,
                               concurrency=DEFAULT_CONCURRENCY,
                               requests_help="; the direct-to-service ones make half as many")
    parser.add_argument("--duration", type=float, default=0.0, metavar="S",
                        help="after the measurements, run whole flows back to back for S "
                             "seconds and check that resident memory does not grow (120: "
                             "issue #13's two-minute check; default 0, off)")
    command.add_production_arguments(parser)
    command.add_venv_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    command.add_store_arguments(parser, database="the benchmark's own database")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or (args.warmup or 0) < 0:
        parser.error("--requests and --concurrency must be at least 1, --warmup at least 0")
    if args.duration and args.duration < 10:
        parser.error("--duration must be at least 10 seconds (or 0, off)")
    return args


async def main(argv: list[str]) -> int:
    args = parse(argv)
    command.cancel_on_sigterm()
    options = Options(requests=args.requests, concurrency=args.concurrency,
                      warmup=command.warmup(args))
    before = report.machine()
    command.say(f"bench: starting the stack (load average {before['load_average'][0]})",
        quiet=args.json)
    try:
        async with running_stack(database_url=args.database_url, redis_url=args.redis_url,
                                 log_path=RESULTS / "stack.log",
                                 production=command.as_in_production(args),
                                 venv=args.venv) as stack:
            meter = CpuMeter(services=stack.pids, database_name=stack.database_name,
                             database_url=args.database_url, redis_url=args.redis_url)
            await meter.open()
            try:
                command.say("bench: measuring", quiet=args.json)
                measured: Measurements = await measure_all(stack, options, meter)
                command.say("bench: counting Redis commands per request", quiet=args.json)
                touches = await store_touches(stack, redis_url=args.redis_url)
                steady = (await _steady(stack, args, quiet=args.json)
                          if args.duration else None)
            finally:
                await meter.close()
    except (StackFailed, StepFailed) as exc:
        return command.failed("bench", exc)
    except asyncio.CancelledError:
        return command.interrupted("bench", "the stack is stopped and its database dropped")
    after = report.machine()
    ran_on = interpreter(args.venv)
    document = report.as_json(measured, options, before, after, touches, interpreter=ran_on)
    checks = judge(steady, rss_only=True) if steady else []
    if steady:
        document["steady"] = {"seconds": steady.plan.seconds,
                              "warmup_seconds": steady.plan.warmup,
                              "window_seconds": steady.plan.window,
                              "samples": [s.as_json() for s in steady.samples],
                              "error_samples": steady.error_samples,
                              "checks": [{"name": c.name, "passed": c.passed,
                                          "detail": c.detail} for c in checks]}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(document, indent=2) + "\n")
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(report.text(measured, options, before, touches, interpreter=ran_on))
        if steady:
            print("\n" + _steady_text(steady, checks))
        print(f"Load average after: {' '.join(map(str, after['load_average']))}; "
              f"results in {RESULTS / 'latest.json'}")
    return 1 if measured.errors or not all(c.passed for c in checks) else 0


async def _steady(stack: Stack, args: argparse.Namespace, *, quiet: bool) -> Run:
    """Whole flows back to back on every worker for ``--duration`` seconds (issue #13 item 5:
    no growth over a two-minute run), resident memory sampled every few seconds."""
    plan = Plan(seconds=args.duration, every=max(1.0, args.duration / 60), rate=None,
                workers=args.concurrency, refreshes=STEADY_REFRESHES)
    command.say(f"bench: whole flows back to back for {args.duration:g} s (warm-up "
        f"{plan.warmup:.0f} s, then resident memory compared between the first and the last "
        f"{plan.window:.0f} s)", quiet=quiet)
    target = Target(gateway_url=stack.gateway_url, token_url=stack.token_public_url,
                    token_grpc=stack.token_grpc,
                    bookings_url=stack.bookings_url, clients=stack.clients or
                    ((stack.person, stack.app),), pids=stack.pids,
                    database_url=args.database_url, database_name=stack.database_name,
                    redis_url=args.redis_url, redis_prefix=REDIS_PREFIX)
    return await drive(target, plan)


def _steady_text(run: Run, checks: list[Check]) -> str:
    plan = run.plan
    rps = sum(s.requests for s in run.samples) / plan.seconds
    lines = [f"Steady phase: {plan.seconds:g} s of whole flows at concurrency {plan.workers} "
             f"({rps:.0f} req/s, {run.errors} errors). Resident memory, mean of the first "
             f"{plan.window:.0f} s after a {plan.warmup:.0f} s warm-up → mean of the last "
             f"{plan.window:.0f} s (fails at +{RSS_GROWTH_LIMIT * 100:.0f} %):"]
    lines += [f"  {'PASS' if c.passed else 'FAIL'}  {c.name:<16} {c.detail}" for c in checks]
    lines += [f"  error: {s}" for s in run.error_samples[:5]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(uvloop.run(main(sys.argv[1:])))

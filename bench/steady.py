"""A steady mixed load over a long time, and what the servers hold meanwhile (issue #12 item 2,
issue #13 item 5).

Several clients (each a signed-in user with an app of their own) run whole flows, one after
the other as a real app does: ``authorize`` → ``exchange`` → ``refresh`` (R times, each with the
refresh token the last one returned) → ``ValidateToken`` over gRPC → ``GET /v1/bookings``. The
flows start at a steady rate (``rate`` flows per second, so latency does not feed back into the
load), or, with no rate, back to back on every worker (a closed loop: as much as the machine
does).

Every ``every`` seconds a :class:`Sample` is taken: requests per second, p50/p99 of each step,
errors, and for each server process its resident memory (``VmRSS``) and open file descriptors,
plus the Postgres connections to the stack's database and Redis's memory and the number of
keys under the stack's prefix.

:func:`judge` then compares the first window after the warm-up with the last window of the run.
Warm-up is the first fifth of the run (two minutes of ten): pools open their connections,
caches fill, the allocator reaches its working set. A window is a minute, or a third of what
follows the warm-up when the run is shorter than four minutes. Open files are compared at rest
instead, a few seconds before the load and a few seconds after it (``Plan.rest``): under load
their number follows the load's own concurrency.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import fmean, median
from urllib.parse import urlsplit

import asyncpg
import httpx
import redis.asyncio as aioredis

from bench import flow
from bench.http1 import Client
from bench.load import ERROR_SAMPLES, percentile
from bench.procs import open_fds, rss_of, sockets_to, tcp_peers
from otesse.auth.v1 import token_pb2_grpc
from services.common.grpc_client import create_channel
from services.common.redis_client import create_redis
from services.common.settings import Env, StoreSettings

STEPS = ("authorize", "exchange", "refresh", "validate", "bookings")
RSS_GROWTH_LIMIT = 0.10
# "Flat": a count may exceed the one it is compared with by this much at most (a lazily
# opened channel, a pool's next connection); a leak of one per flow would be thousands.
FLAT_SLACK = 4
FLAT_SLACK_FRACTION = 0.10
# Each service's Redis pool holds at most this many connections (services.common).
REDIS_POOL_MAX: int = inspect.signature(create_redis).parameters["max_connections"].default
# Flows waiting for a free worker past this many mean the stack cannot keep up with the rate.
BACKLOG_LIMIT = 1000


class FallingBehind(Exception):
    """The stack answers too slowly for the rate asked: flows pile up waiting for a worker."""


@dataclass(frozen=True)
class Target:
    """Where the stack answers, who uses it, and which processes and stores are its own."""

    gateway_url: str
    # The token endpoint where production's ingress sends it (the token service's edge).
    token_url: str
    token_grpc: str
    bookings_url: str
    clients: tuple[tuple[flow.Person, flow.App], ...]
    # Server process name → pid.
    pids: dict[str, int]
    database_url: str
    database_name: str
    redis_url: str
    redis_prefix: str
    # Each service's Postgres pool holds at most this many connections (OTESSE_DB_POOL_MAX).
    pool_max: int = field(default_factory=lambda: _default_pool_max())


@dataclass(frozen=True)
class Plan:
    seconds: float
    # Seconds between samples.
    every: float
    # Flows started per second over all clients; None: every worker back to back.
    rate: float | None
    # Flows in progress at once at most.
    workers: int
    # Refreshes per flow.
    refreshes: int
    # Seconds with no load before and after it, after which open files are counted at rest
    # (0: not counted). Longer than every keep-alive of the stack (uvicorn's 5 s).
    rest: float = 0.0

    @property
    def warmup(self) -> float:
        return self.seconds / 5

    @property
    def window(self) -> float:
        return min(60.0, (self.seconds - self.warmup) / 3)


@dataclass(frozen=True)
class Sample:
    # Seconds since the load started, at the end of this sample's interval.
    t: float
    seconds: float
    requests: int
    errors: int
    # Flows that waited for a free worker (rate mode only).
    late: int
    # Step → (p50, p99) in ms; a step with no request in the interval is absent.
    latency: dict[str, tuple[float, float]]
    rss_kib: dict[str, int]
    fds: dict[str, int]
    pg_connections: int
    redis_used_bytes: int
    redis_keys: int
    # Connections by the pool that holds them (the services' application_name).
    pg_pools: dict[str, int] = field(default_factory=dict)
    # Service → its descriptors that are connections to each store ("postgres", "redis").
    store_sockets: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def as_json(self) -> dict[str, object]:
        return {"t": round(self.t, 2), "rps": round(self.rps, 1), "requests": self.requests,
                "errors": self.errors, "late": self.late,
                "latency_ms": {k: {"p50": round(a, 3), "p99": round(b, 3)}
                               for k, (a, b) in self.latency.items()},
                "rss_mib": {k: round(v / 1024, 1) for k, v in self.rss_kib.items()},
                "fds": self.fds, "pg_connections": self.pg_connections,
                "pg_connections_by_pool": self.pg_pools,
                "store_connections": self.store_sockets,
                "redis_used_mib": round(self.redis_used_bytes / 2**20, 2),
                "redis_keys": self.redis_keys}


@dataclass(frozen=True)
class AtRest:
    """Each service's open descriptors with no load, and those that are store connections."""

    fds: dict[str, int]
    store_sockets: dict[str, dict[str, int]]

    def own(self, name: str) -> int:
        return self.fds[name] - sum(self.store_sockets.get(name, {}).values())


def _at_rest(pids: dict[str, int], ports: dict[int, str]) -> AtRest:
    peers = tcp_peers()
    return AtRest(fds={name: open_fds(pid) for name, pid in pids.items()},
                  store_sockets={name: sockets_to(pid, peers, ports)
                                 for name, pid in pids.items()})


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


def _default_pool_max() -> int:
    return StoreSettings.from_env(Env({})).db_pool_max


@dataclass
class Run:
    plan: Plan
    samples: list[Sample] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)
    # The target's pool bound (see Target.pool_max).
    pool_max: int = field(default_factory=_default_pool_max)
    # Open files at rest before the load and after it (Plan.rest).
    rest_before: AtRest | None = None
    rest_after: AtRest | None = None

    @property
    def errors(self) -> int:
        return sum(s.errors for s in self.samples)


class _Interval:
    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = {step: [] for step in STEPS}
        self.errors = 0
        self.late = 0
        self.began = time.perf_counter()


class _Driver:
    """Where the flows record what happened, one interval at a time."""

    def __init__(self, run: Run) -> None:
        self._run = run
        self._now = _Interval()

    def record(self, step: str, seconds: float) -> None:
        self._now.latencies[step].append(seconds)

    def failed(self, step: str, exc: Exception) -> None:
        self._now.errors += 1
        if len(self._run.error_samples) < ERROR_SAMPLES * 3:
            self._run.error_samples.append(f"{step}: {type(exc).__name__}: {exc}"[:300])

    def late(self) -> None:
        self._now.late += 1

    def swap(self) -> _Interval:
        ended, self._now = self._now, _Interval()
        return ended


class _Lane:
    """One client's connections: its user's browser session, the API, the bookings API."""

    def __init__(self, target: Target, app: flow.App, session: dict[str, str],
                 connections: int, stub: token_pb2_grpc.TokenServiceAsyncStub) -> None:
        self.app = app
        self.browser = Client(target.gateway_url, connections=connections, headers=session)
        self.api = Client(target.token_url, connections=connections)
        self.bookings = Client(target.bookings_url, connections=connections)
        self.stub = stub
        self.scopes = app.scope.split()

    async def flow(self, driver: _Driver, refreshes: int) -> None:
        """One whole flow; the first failed step ends it (the next steps need its answer)."""
        step = "authorize"
        try:
            started = time.perf_counter()
            code = await flow.authorize(self.browser, self.app)
            driver.record(step, time.perf_counter() - started)
            step = "exchange"
            started = time.perf_counter()
            tokens = await flow.exchange(self.api, self.app, code)
            driver.record(step, time.perf_counter() - started)
            step = "refresh"
            for _ in range(refreshes):
                started = time.perf_counter()
                tokens = await flow.refresh(self.api, self.app, tokens.refresh_token)
                driver.record(step, time.perf_counter() - started)
            step = "validate"
            started = time.perf_counter()
            await flow.validate(self.stub, tokens.access_token, self.scopes)
            driver.record(step, time.perf_counter() - started)
            step = "bookings"
            started = time.perf_counter()
            await flow.list_bookings(self.bookings, tokens.access_token)
            driver.record(step, time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001 - every failure is counted, none stops the run
            driver.failed(step, exc)

    async def aclose(self) -> None:
        for client in (self.browser, self.api, self.bookings):
            await client.aclose()


class _Probe:
    """The stores' side: connections to the stack's database, Redis memory and keys."""

    def __init__(self, target: Target) -> None:
        self._target = target
        self._db: asyncpg.Connection | None = None
        self._redis: aioredis.Redis | None = None

    async def __aenter__(self) -> _Probe:
        self._db = await asyncpg.connect(self._target.database_url)
        self._redis = aioredis.Redis.from_url(self._target.redis_url)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._db is not None:
            await self._db.close()
        if self._redis is not None:
            await self._redis.aclose()

    async def pg_connections(self) -> dict[str, int]:
        """Connections to the stack's database (but this one), by ``application_name``: each
        service names its pool ``otesse-<service>``."""
        assert self._db is not None
        rows = await self._db.fetch(
            "SELECT application_name, count(*) AS n FROM pg_stat_activity WHERE datname = $1 "
            "AND pid <> pg_backend_pid() GROUP BY application_name",
            self._target.database_name)
        return {row["application_name"]: int(row["n"]) for row in rows}

    async def redis(self) -> tuple[int, int]:
        """Redis's used memory (the whole server: an upper bound when it is shared) and the
        number of keys under the stack's prefix."""
        assert self._redis is not None
        info = await self._redis.info("memory")
        keys = 0
        async for _ in self._redis.scan_iter(match=f"{self._target.redis_prefix}*", count=1000):
            keys += 1
        return int(info["used_memory"]), keys


def _latency(interval: _Interval) -> dict[str, tuple[float, float]]:
    return {step: (percentile(values, 0.50) * 1000, percentile(values, 0.99) * 1000)
            for step, values in interval.latencies.items() if values}


async def drive(target: Target, plan: Plan,
                on_sample: Callable[[Sample], None] | None = None) -> Run:
    """Runs the plan against the target and returns every sample (each also handed to
    ``on_sample`` as it is taken)."""
    run = Run(plan, pool_max=target.pool_max)
    driver = _Driver(run)
    sessions = []
    for person, app in target.clients:
        async with httpx.AsyncClient(base_url=target.gateway_url, timeout=30.0) as signing_in:
            await flow.sign_in_and_consent(signing_in, person=person, app=app)
            sessions.append(flow.session_cookie(signing_in))
    channel = create_channel(target.token_grpc, services=("otesse.auth.v1.TokenService",))
    stub = token_pb2_grpc.TokenServiceStub(channel)
    lanes_per_client = max(1, -(-plan.workers // len(target.clients)))
    lanes = [_Lane(target, app, session, lanes_per_client, stub)
             for (_, app), session in zip(target.clients, sessions, strict=True)]
    tickets: asyncio.Queue[None] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    ports = {urlsplit(target.database_url).port or 5432: "postgres",
             urlsplit(target.redis_url).port or 6379: "redis"}
    if plan.rest:
        # Signing in left keep-alive connections behind; they close within the rest.
        await asyncio.sleep(plan.rest)
        run.rest_before = _at_rest(target.pids, ports)
    began = loop.time()
    deadline = began + plan.seconds

    async def worker(index: int) -> None:
        lane = lanes[index % len(lanes)]
        while loop.time() < deadline:
            if plan.rate is not None:
                await tickets.get()
                if loop.time() >= deadline:
                    return
            await lane.flow(driver, plan.refreshes)

    async def pace() -> None:
        assert plan.rate is not None
        started = 0
        while True:
            # Absolute start times: a slow tick never lowers the rate that follows.
            due = began + started / plan.rate
            await asyncio.sleep(max(0.0, due - loop.time()))
            # A ticket still waiting means every worker is busy: this flow starts late.
            if tickets.qsize() > 0:
                driver.late()
            if tickets.qsize() > BACKLOG_LIMIT:
                raise FallingBehind(f"more than {BACKLOG_LIMIT} flows wait for a worker: the "
                                    f"stack cannot keep up with {plan.rate:g} flows per second")
            tickets.put_nowait(None)
            started += 1

    async def sample(probe: _Probe) -> None:
        taken = 0
        while True:
            taken += 1
            await asyncio.sleep(max(0.0, began + min(taken * plan.every, plan.seconds)
                                    - loop.time()))
            ended = driver.swap()
            rss = rss_of(target.pids)
            fds = {name: open_fds(pid) for name, pid in target.pids.items()}
            peers = tcp_peers()
            stores = {name: sockets_to(pid, peers, ports) for name, pid in target.pids.items()}
            used, keys = await probe.redis()
            pools = await probe.pg_connections()
            row = Sample(
                t=loop.time() - began, seconds=time.perf_counter() - ended.began,
                requests=sum(len(v) for v in ended.latencies.values()) + ended.errors,
                errors=ended.errors, late=ended.late, latency=_latency(ended), rss_kib=rss,
                fds=fds, pg_connections=sum(pools.values()), redis_used_bytes=used,
                redis_keys=keys, pg_pools=pools, store_sockets=stores)
            run.samples.append(row)
            if on_sample is not None:
                on_sample(row)
            if taken * plan.every >= plan.seconds:
                return

    try:
        async with _Probe(target) as probe:
            workers = [asyncio.create_task(worker(i)) for i in range(plan.workers)]
            pacer = asyncio.create_task(pace()) if plan.rate is not None else None
            sampler = asyncio.create_task(sample(probe))
            try:
                watched = [sampler] + ([pacer] if pacer is not None else [])
                done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
                # The last flows finish (their requests fall after the last sample and are
                # not counted); a worker waiting for a ticket is let go.
                for _ in workers:
                    tickets.put_nowait(None)
                await asyncio.wait(workers, timeout=30)
            finally:
                for task in [*workers, sampler] + ([pacer] if pacer is not None else []):
                    task.cancel()
                for task in [*workers, sampler] + ([pacer] if pacer is not None else []):
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
    finally:
        for lane in lanes:
            await lane.aclose()
        await channel.close()
    if plan.rest:
        # The load generator's connections are closed; the servers' keep-alives between
        # themselves close within the rest. What stays open is what the services hold.
        await asyncio.sleep(plan.rest)
        run.rest_after = _at_rest(target.pids, ports)
    return run


def _flat(first: list[int], last: list[int]) -> tuple[bool, float, float]:
    # Medians: a burst of connections (a slow second, every worker busy) is not a leak, while
    # a leak raises every sample after it.
    before, after = float(median(first)), float(median(last))
    return after <= before + max(FLAT_SLACK, before * FLAT_SLACK_FRACTION), before, after


def windows(run: Run) -> tuple[list[Sample], list[Sample]]:
    """The samples of the first window after the warm-up and of the last window."""
    plan = run.plan
    start = plan.warmup
    first = [s for s in run.samples if start < s.t <= start + plan.window + 1e-6]
    last = [s for s in run.samples if s.t > plan.seconds - plan.window - 1e-6]
    return first, last


def judge(run: Run, *, rss_only: bool = False) -> list[Check]:
    """Pass or fail on each promise: no errors; resident memory grows less than 10 % from the
    first window after warm-up to the last (means); open files flat at rest (before the load,
    after it); Postgres and Redis connections flat (medians of the windows), or all in the
    services' pools and within their bounds."""
    checks = [Check("errors", run.errors == 0, f"{run.errors} errors")]
    first, last = windows(run)
    if not first or not last or first[0] is last[-1]:
        checks.append(Check("windows", False, "the run is too short to compare a window "
                                              "after the warm-up with the last one"))
        return checks
    for name in run.samples[0].rss_kib:
        before = fmean(s.rss_kib[name] for s in first)
        after = fmean(s.rss_kib[name] for s in last)
        growth = (after - before) / before if before else 0.0
        # A process that is gone reads 0: it fails here too, not only as errors.
        alive = min(s.rss_kib[name] for s in first + last) > 0
        checks.append(Check(f"RSS {name}", alive and growth < RSS_GROWTH_LIMIT,
                            f"{before / 1024:.1f} → {after / 1024:.1f} MiB "
                            f"({growth * 100:+.1f} %)"))
    if rss_only:
        return checks
    # Open files are counted at rest, before the load and after it: under load their number
    # follows the load's own concurrency (a slow minute keeps more connections open), at rest
    # only what a service holds stays. Connections to the stores are judged below, by their
    # pools' bounds: a pool keeps what a burst made it open.
    if run.rest_before is None or run.rest_after is None:
        checks.append(Check("fds", False, "open files were not counted at rest (Plan.rest)"))
    else:
        for name in run.rest_before.fds:
            before, after = run.rest_before.own(name), run.rest_after.own(name)
            passed = after <= before + max(FLAT_SLACK, before * FLAT_SLACK_FRACTION)
            checks.append(Check(f"fds {name}", passed, f"{before} → {after} at rest "
                                                       "(without connections to the stores)"))
    passed, before, after = _flat([s.pg_connections for s in first],
                                  [s.pg_connections for s in last])
    # A pool keeps the connections a burst made it open until one idles for 5 minutes, rare
    # under steady load: growth up to the pools' bound is a high-water mark, not a leak. A
    # leak is a connection outside the pools, or more than a pool may hold.
    pools = {name for s in run.samples for name in s.pg_pools}
    ceiling = run.pool_max * len(pools)
    highest = max(s.pg_connections for s in run.samples)
    bounded = bool(pools) and all(
        name.startswith("otesse-") and count <= run.pool_max
        for s in run.samples for name, count in s.pg_pools.items())
    checks.append(Check("postgres connections", passed or bounded,
                        f"{before:g} → {after:g} (median); highest {highest}, the "
                        f"{len(pools)} pools hold at most {ceiling}"))

    def redis(sample: Sample) -> int:
        return sum(sockets.get("redis", 0) for sockets in sample.store_sockets.values())

    passed, before, after = _flat([redis(s) for s in first], [redis(s) for s in last])
    highest = max(sockets.get("redis", 0) for s in run.samples
                  for sockets in s.store_sockets.values()) if run.samples[0].store_sockets else 0
    checks.append(Check("redis connections", passed or highest <= REDIS_POOL_MAX,
                        f"{before:g} → {after:g} (median, every service); at most {highest} "
                        f"in one service, whose pool holds {REDIS_POOL_MAX}"))
    return checks

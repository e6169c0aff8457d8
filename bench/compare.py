"""``python -m bench.compare`` (``make bench-peer``): Otesse side by side with the reference
server, node-oidc-provider, on the same machine in the same run (issue #13 item 1).

Three servers run at once: Otesse's whole stack (:mod:`bench.stack`, measured through its
gateway) and node-oidc-provider twice, with its Redis adapter and in memory
(:mod:`bench.reference`). Each is measured in turn, in alternating rounds (Otesse, peer with
Redis, peer in memory, Otesse, …), with the same load generator (wrk, :mod:`bench.wrk`; or
this process's asyncio client with ``--generator asyncio``), the same requests, the same
concurrency and the same steps:

1. ``authorize``: ``GET`` the authorization endpoint for a user who signed in and approved the
   app before (with PKCE ``S256``): a redirect straight back with a code; the codes are kept.
2. ``exchange``: those codes at the token endpoint, form body, ``client_secret_basic``, with
   the PKCE verifier.
3. ``refresh``: C independent chains (C = the concurrency), each rotating strictly one refresh
   after the other.

Each step is warmed up first. Around each measurement the CPU time of every server process is
read from ``/proc`` (Otesse: its services, the Postgres backends of its database and Redis;
the peer: node and Redis), and the load generator's own (this process and wrk). ``validate``
and ``revalidate`` (gRPC, Otesse only) are sent by this process. The report gives the median
of each figure over the rounds and the median of the per-round ratios Otesse / peer; the JSON
has every round. The exit code is 1 when any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import math
import secrets
import statistics
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlencode, urlsplit

import asyncpg
import httpx
import uvloop

from bench import baseline, command, flow, load, report, wrk
from bench.cpu import CpuMeter, per_request
from bench.http1 import Client
from bench.load import Result, StepFailed
from bench.procs import rss_of
from bench.reference import REDIS_PREFIX as PEER_PREFIX
from bench.reference import VERSION, Storage, node_version, running_reference
from bench.stack import (
    REDIS_PREFIX,
    ROOT,
    AsInProduction,
    StackFailed,
    interpreter,
    running_stack,
)
from otesse.auth.v1 import token_pb2_grpc
from services.common.grpc_client import create_channel

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_ROUNDS = 3
DEFAULT_REQUESTS = 5000
DEFAULT_CONCURRENCY = 16
STEPS = ("authorize", "exchange", "refresh")
# Otesse only (no peer answers it): compared with a baseline, never with the peer.
VALIDATE = "validate"
# The same call on a few tokens over and over, as a client's API calls present its one token.
REVALIDATE = "revalidate"
GRPC_STEPS = (VALIDATE, REVALIDATE)
EVERY_STEP = (*STEPS, *GRPC_STEPS)
# Above this, the load generator takes enough of the cores to bend the comparison.
CLIENT_CPU_LIMIT_MS = 0.15
# Not server work: the load generator, and everything else the machine did meanwhile.
NOT_SERVER = ("client", "other")
# Every run names its databases and Redis prefixes after itself (``_<run>``, ``-<run>:``):
# another benchmark starting on the same machine (``make bench`` drops ``otesse_bench`` and
# clears ``otesse-bench:`` as it starts) must not pull the floor from under this one.
BASELINE = "baseline"
TOKEN_SERVICE = "otesse.auth.v1.TokenService"


@dataclass(frozen=True)
class Contender:
    """One server as the load generator sees it."""

    name: str
    base_url: str
    authorize_path: str
    token_path: str
    app: flow.App
    # The signed-in user's ``Cookie`` header.
    session: dict[str, str]
    # Its processes, whose CPU time and memory count as its own.
    pids: dict[str, int]
    # Its Postgres database, whose backends' CPU counts too (None: it has none), and its URL.
    database_name: str | None
    # What its access and refresh tokens start with.
    prefixes: tuple[str, str] = ("", "")
    # Where its token endpoint is, when not at ``base_url``: Otesse's token service serves it
    # at an edge of its own, where production's ingress sends it.
    token_url: str | None = None
    database_url: str | None = None
    # Otesse's token service's gRPC address: ``validate`` and ``revalidate`` steps
    # (``ValidateToken`` on first sightings, then on a few tokens again and again, as
    # internal services call it) are measured too. The peer has no such call.
    token_grpc: str | None = None


@dataclass(frozen=True)
class Options:
    rounds: int
    requests: int
    concurrency: int
    warmup: int
    # Who sends the HTTP steps: wrk (bench.wrk), or this process's asyncio client.
    generator: Literal["wrk", "asyncio"] = "wrk"


def _basic(app: flow.App) -> str:
    # RFC 6749 §2.3.1: the client id and secret are form-encoded before Basic encoding.
    pair = f"{quote(app.client_id, safe='')}:{quote(app.client_secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


class Requests:
    """The three requests, the same bytes for every server but the paths."""

    def __init__(self, contender: Contender) -> None:
        self.contender = contender
        self.verifier = secrets.token_urlsafe(48)
        # Everything but the state is the same in every authorization request: encoded once,
        # so the load generator spends its time on the servers' answers, not on building URLs.
        fixed = {**flow.authorize_params(contender.app, ""), **flow.pkce_params(self.verifier)}
        del fixed["state"]
        self._authorize_target = f"{contender.authorize_path}?{urlencode(fixed)}&state="
        self.headers = {"Content-Type": "application/x-www-form-urlencoded",
                        "Authorization": _basic(contender.app)}

    def authorize_target(self, state: str) -> str:
        # token_urlsafe's alphabet needs no escaping in a query.
        return self._authorize_target + state

    def exchange_body(self, code: str) -> str:
        return urlencode({"grant_type": "authorization_code", "code": code,
                          "redirect_uri": self.contender.app.redirect_uri,
                          "code_verifier": self.verifier})

    async def authorize(self, browser: Client) -> str:
        state = secrets.token_urlsafe(12)
        response = await browser.get(self.authorize_target(state))
        return flow.code_from(response, self.contender.app, state)

    async def exchange(self, api: Client, code: str) -> flow.Tokens:
        return await self._token(api, self.exchange_body(code))

    async def refresh(self, api: Client, refresh_token: str) -> flow.Tokens:
        return await self._token(api, urlencode({"grant_type": "refresh_token",
                                                 "refresh_token": refresh_token}))

    async def _token(self, api: Client, form: str) -> flow.Tokens:
        response = await api.request("POST", self.contender.token_path, headers=self.headers,
                                     body=form.encode())
        if response.status != 200:
            raise StepFailed(f"POST {response.path} answered {response.status}: "
                             f"{response.text[:160]}")
        body = response.json()
        access, refresh = body.get("access_token", ""), body.get("refresh_token", "")
        at_prefix, rt_prefix = self.contender.prefixes
        if (not access.startswith(at_prefix) or not refresh.startswith(rt_prefix)
                or len(access) <= len(at_prefix) or len(refresh) <= len(rt_prefix)
                or body.get("token_type") != "Bearer" or body.get("expires_in") != 3600):
            raise StepFailed(f"not the expected token response: {sorted(body)}, "
                             f"expires_in {body.get('expires_in')}")
        return flow.Tokens(access, refresh)


@dataclass
class Round:
    contender: str
    number: int
    results: dict[str, Result]
    warmup_errors: int
    warmup_error_samples: tuple[str, ...]
    # Step → WAL flushes and bytes per request (the whole Postgres server's), when the server
    # has a database.
    wal: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return self.warmup_errors + sum(r.errors for r in self.results.values())


def server_cpu(result: Result) -> float:
    """CPU ms per request of the server's own processes and stores."""
    return sum(v for k, v in result.cpu_ms.items() if k not in NOT_SERVER)


async def _wal(database: asyncpg.Connection | None) -> tuple[float, float]:
    """The server's WAL flushes (``fsync`` and the like, ``pg_stat_wal``) and its WAL position
    in bytes (``pg_current_wal_lsn``). The position is exact at once; the flushes are reported
    by backends within about a second. Every database on the server adds to both: over a
    measurement of several seconds, Otesse's own plus whatever else wrote."""
    if database is None or database.is_closed():
        return float("nan"), float("nan")
    row = await database.fetchrow(
        "SELECT wal_sync, pg_current_wal_lsn() - '0/0'::pg_lsn AS position FROM pg_stat_wal")
    assert row is not None
    return float(row["wal_sync"]), float(row["position"])


Timed = Callable[[str, Callable[[], Awaitable[Result]], bool], Awaitable[Result]]


def _host(base_url: str) -> str:
    parts = urlsplit(base_url)
    return f"{parts.hostname}:{parts.port}"


def _enough_for_chains(contender: Contender, exchanged: int, chains: int,
                       samples: tuple[str, ...]) -> None:
    """The refresh step runs one chain per connection, each from an exchange's pair."""
    if exchanged < chains:
        raise StepFailed(f"{contender.name}: only {exchanged} exchanges succeeded; {chains} "
                         f"refresh chains need as many (errors: {'; '.join(samples[:2])})")


async def _by_wrk(contender: Contender, requests: Requests, options: Options,
                  timed: Timed) -> list[flow.Tokens]:
    """The three HTTP steps, sent by wrk (:mod:`bench.wrk`); the exchanged token pairs."""
    n, w, c = options.requests, options.warmup, options.concurrency
    token_url = contender.token_url or contender.base_url
    browser = {"Host": _host(contender.base_url), **contender.session}
    api = {"Host": _host(token_url), **requests.headers}
    redirect_uri = contender.app.redirect_uri
    samples: dict[str, tuple[str, ...]] = {}

    async def step(name: wrk.Step, base_url: str, path: str, headers: dict[str, str],
                   lines: list[str], total: int, warm: bool) -> tuple[str, ...]:
        answered: list[wrk.Answered] = []

        async def work() -> Result:
            answered.append(await wrk.run(
                name, name, base_url, path=path, headers=headers, lines=lines, total=total,
                concurrency=min(c, total), redirect_uri=redirect_uri,
                prefixes=contender.prefixes))
            return answered[0].result

        if total == 0:
            return ()
        samples[name] = (await timed(name, work, warm)).error_samples
        return answered[0].outputs

    async def codes(total: int, warm: bool) -> list[str]:
        targets = [requests.authorize_target(secrets.token_urlsafe(12)) for _ in range(total)]
        return list(await step("authorize", contender.base_url, contender.authorize_path,
                               browser, targets, total, warm))

    async def exchanges(minted: list[str], warm: bool) -> list[flow.Tokens]:
        bodies = [requests.exchange_body(code) for code in minted]
        answered = await step("exchange", token_url, contender.token_path, api, bodies,
                              len(bodies), warm)
        return [flow.Tokens(*pair.split(" ", 1)) for pair in answered]

    # Codes live 60 s: each batch is exchanged right after it is minted.
    warm_codes = await codes(w, warm=True)
    measured_codes = await codes(n, warm=False)
    await exchanges(warm_codes, warm=True)
    pairs = await exchanges(measured_codes, warm=False)
    _enough_for_chains(contender, len(pairs), c, samples.get("exchange", ()))
    chains = [pair.refresh_token for pair in pairs[:c]]
    for total, warm in ((w, True), (n, False)):
        # Fewer requests than chains: the first ``total`` chains go on, the others wait.
        going = min(total, c)
        chains = [*await step("refresh", token_url, contender.token_path, api,
                              chains[:going], total, warm), *chains[going:]]
    return pairs


async def _by_asyncio(contender: Contender, requests: Requests, options: Options,
                      timed: Timed) -> list[flow.Tokens]:
    """The three HTTP steps, sent by this process's asyncio client (:mod:`bench.http1`)."""
    n, w, c = options.requests, options.warmup, options.concurrency

    async def run(name: str, step: Callable[[int], Awaitable[None]], total: int,
                  warm: bool) -> Result:
        return await timed(name, lambda: load.run(name, step, total=total, concurrency=c),
                           warm)

    async with (Client(contender.base_url, connections=c, headers=contender.session) as browser,
                Client(contender.token_url or contender.base_url, connections=c) as api):

        async def codes(total: int, warm: bool) -> list[str | None]:
            minted: list[str | None] = [None] * total

            async def step(index: int) -> None:
                minted[index] = await requests.authorize(browser)

            await run("authorize", step, total, warm)
            return minted

        async def exchanges(minted: list[str | None], warm: bool) -> list[flow.Tokens | None]:
            tokens: list[flow.Tokens | None] = [None] * len(minted)

            async def step(index: int) -> None:
                code = minted[index]
                if code is None:
                    raise StepFailed("no code to exchange (its authorization failed)")
                tokens[index] = await requests.exchange(api, code)

            samples = (await run("exchange", step, len(minted), warm)).error_samples
            if not warm:
                _enough_for_chains(contender, sum(t is not None for t in tokens), c, samples)
            return tokens

        # Codes live 60 s: each batch is exchanged right after it is minted.
        warm_codes = await codes(w, warm=True)
        measured_codes = await codes(n, warm=False)
        await exchanges(warm_codes, warm=True)
        pairs = [t for t in await exchanges(measured_codes, warm=False) if t is not None]
        chains: asyncio.Queue[str] = asyncio.Queue()
        for pair in pairs[:c]:
            chains.put_nowait(pair.refresh_token)

        async def refresh(_: int) -> None:
            token = await chains.get()
            try:
                token = (await requests.refresh(api, token)).refresh_token
            finally:
                # The next refresh of this chain waits for this one: never two at once.
                chains.put_nowait(token)

        await run("refresh", refresh, w, warm=True)
        await run("refresh", refresh, n, warm=False)
    return pairs


async def measure(contender: Contender, options: Options, meter: CpuMeter, number: int,
                  database: asyncpg.Connection | None = None) -> Round:
    """One round of the three steps on ``contender``; ``database``, a connection to its
    Postgres, to count the WAL each step writes."""
    n, w, c = options.requests, options.warmup, options.concurrency
    requests = Requests(contender)
    out = Round(contender.name, number, {}, 0, ())

    async def timed(name: str, work: Callable[[], Awaitable[Result]], warm: bool) -> Result:
        if warm:
            result = await work()
            out.warmup_errors += result.errors
            out.warmup_error_samples += result.error_samples
            return result
        before, wal_before = await meter.snapshot(), await _wal(database)
        result = await work()
        after, wal_after = await meter.snapshot(), await _wal(database)
        out.results[name] = replace(result, cpu_ms=per_request(before, after, result.requests),
                                    rss_kib=rss_of(contender.pids))
        if database is not None and result.requests and not any(
                map(math.isnan, (*wal_before, *wal_after))):
            out.wal[name] = {"flushes": (wal_after[0] - wal_before[0]) / result.requests,
                             "bytes": (wal_after[1] - wal_before[1]) / result.requests}
        return result

    async def run(name: str, step: Callable[[int], Awaitable[None]], total: int,
                  warm: bool) -> None:
        await timed(name, lambda: load.run(name, step, total=total, concurrency=c), warm)

    steps = _by_wrk if options.generator == "wrk" else _by_asyncio
    pairs = await steps(contender, requests, options, timed)

    if contender.token_grpc is not None:
        access = itertools.cycle([pair.access_token for pair in pairs])
        scopes = contender.app.scope.split()
        channel = create_channel(contender.token_grpc, services=(TOKEN_SERVICE,))
        try:
            stub = token_pb2_grpc.TokenServiceStub(channel)

            async def validate(_: int) -> None:
                await flow.validate(stub, next(access), scopes)

            await run(VALIDATE, validate, w, warm=True)
            await run(VALIDATE, validate, n, warm=False)

            again = itertools.cycle([pair.access_token for pair in pairs[:4 * c]])

            async def revalidate(_: int) -> None:
                await flow.validate(stub, next(again), scopes)

            await run(REVALIDATE, revalidate, w, warm=True)
            await run(REVALIDATE, revalidate, n, warm=False)
        finally:
            await channel.close()
    return out


def median_figures(rounds: list[Round], step: str) -> dict[str, float]:
    results = [r.results[step] for r in rounds if step in r.results]
    if not results:
        return {}

    def mid(values: list[float]) -> float:
        return float(statistics.median(values))

    figures = {
        "rps": mid([r.rps for r in results]),
        "p50_ms": mid([r.p50_ms for r in results]),
        "p99_ms": mid([r.p99_ms for r in results]),
        "server_cpu_ms": mid([server_cpu(r) for r in results]),
        "client_cpu_ms": mid([r.cpu_ms.get("client", 0.0) for r in results]),
        "other_cpu_ms": mid([r.cpu_ms.get("other", 0.0) for r in results]),
        "rss_mib": mid([sum(r.rss_kib.values()) / 1024 for r in results]),
    }
    for name in sorted({k for r in results for k in r.cpu_ms} - set(NOT_SERVER)):
        figures[f"cpu_ms:{name}"] = mid([r.cpu_ms.get(name, 0.0) for r in results])
    return figures


def median_ratios(ours: list[Round], theirs: list[Round], step: str) -> dict[str, float]:
    """Per round, Otesse's figure over the peer's measured right after it; the median."""
    pairs = [(a.results[step], b.results[step]) for a, b in zip(ours, theirs, strict=False)
             if step in a.results and step in b.results]
    if not pairs:
        return {}

    def ratio(mine: float, peer: float) -> float:
        return mine / peer if peer else float("nan")

    return {
        "server_cpu": float(statistics.median(ratio(server_cpu(a), server_cpu(b))
                                              for a, b in pairs)),
        "rps": float(statistics.median(ratio(a.rps, b.rps) for a, b in pairs)),
        "p50": float(statistics.median(ratio(a.p50_ms, b.p50_ms) for a, b in pairs)),
    }


def text(by_name: dict[str, list[Round]], options: Options, header: list[str]) -> str:
    names = list(by_name)
    otesse, peers = names[0], names[1:]
    lines = [*header, "",
             f"Medians of {options.rounds} rounds (server CPU: every process of that server "
             "and its stores; client: this load generator):",
             f"  {'step':<10} {'server':<30} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} "
             f"{'server CPU':>11} {'client':>8} {'other':>7} {'RSS MiB':>8}",
             f"  {'':<10} {'':<30} {'':>7} {'':>8} {'':>8} {'ms/req':>11} {'ms/req':>8} "
             f"{'ms/req':>7} {'':>8}"]
    heavy_client = False
    for step in EVERY_STEP:
        for index, name in enumerate(names):
            m = median_figures(by_name[name], step)
            if not m:
                continue
            # The gRPC client costs the load generator more than HTTP/1.1 (validate): judged
            # against a baseline only, where both pay it alike.
            heavy_client |= step not in GRPC_STEPS and m["client_cpu_ms"] > CLIENT_CPU_LIMIT_MS
            lines.append(f"  {step if index == 0 else '':<10} {name:<30} {m['rps']:>7.0f} "
                         f"{m['p50_ms']:>8.2f} {m['p99_ms']:>8.2f} {m['server_cpu_ms']:>11.3f} "
                         f"{m['client_cpu_ms']:>8.3f} {m['other_cpu_ms']:>7.3f} "
                         f"{m['rss_mib']:>8.0f}")
    lines += ["", "Server CPU ms per request by process (medians):"]
    for step in EVERY_STEP:
        for index, name in enumerate(names):
            m = median_figures(by_name[name], step)
            parts = [f"{k.split(':', 1)[1]} {v:.3f}" for k, v in m.items()
                     if k.startswith("cpu_ms:")]
            if parts:
                lines.append(f"  {step if index == 0 else '':<10} {name:<30} "
                             + ", ".join(parts))
    lines += ["", f"{otesse} / the others, median of the per-round ratios (server CPU per "
                  "request: "
                  "at most 1.00 means Otesse spends no more per request; req/s: at least 1.00 "
                  "means Otesse serves as many):"]
    lines.append(f"  {'step':<10} " + "".join(f"{'vs ' + p:<40}" for p in peers))
    lines.append(f"  {'':<10} " + "".join(f"{'CPU/req':>9} {'req/s':>7} {'p50':>7}{'':<15}"
                                          for _ in peers))
    for step in EVERY_STEP:
        cells = []
        for peer in peers:
            ratios = median_ratios(by_name[otesse], by_name[peer], step)
            if not ratios:  # a step the other server does not have (validate)
                cells.append(f"{'-':>9} {'-':>7} {'-':>7}{'':<15}")
                continue
            cells.append(f"{ratios['server_cpu']:>9.2f} {ratios['rps']:>7.2f} "
                         f"{ratios['p50']:>7.2f}{'':<15}")
        lines.append(f"  {step:<10} " + "".join(cells))
    for name in names:
        # Over the rounds that could read it (a round whose connection was ended has none).
        wal = [(step, statistics.median(r.wal[step]["bytes"] for r in by_name[name]
                                        if step in r.wal),
                statistics.median(r.wal[step]["flushes"] for r in by_name[name]
                                  if step in r.wal))
               for step in EVERY_STEP if any(step in r.wal for r in by_name[name])]
        if wal:
            lines += ["", f"{name}'s Postgres WAL per request (medians; the whole server's, "
                          "so other users of it add to it): " + ", ".join(
                              f"{step} {size:.0f} bytes, {flushes:.2f} flushes"
                              for step, size, flushes in wal)]
    lines.append("")
    client = max((median_figures(by_name[n], s).get("client_cpu_ms", 0.0)
                  for n in names for s in STEPS), default=0.0)
    lines.append(f"The load generator spent at most {client:.3f} ms of CPU per request "
                 f"(limit {CLIENT_CPU_LIMIT_MS} ms)"
                 + (": ABOVE THE LIMIT, the figures are bent by it." if heavy_client else "."))
    errors = sum(r.errors for rounds in by_name.values() for r in rounds)
    if errors:
        lines.append(f"ERRORS: {errors} (warm-ups included)")
        for rounds in by_name.values():
            for r in rounds:
                samples = [*r.warmup_error_samples,
                           *(s for res in r.results.values() for s in res.error_samples)]
                lines += [f"  {r.contender} round {r.number}: {s}" for s in samples[:3]]
    else:
        lines.append("0 errors.")
    return "\n".join(lines)


def as_json(by_name: dict[str, list[Round]], options: Options,
            context: dict[str, Any]) -> dict[str, Any]:
    names = list(by_name)
    return {
        **context,
        "options": {"rounds": options.rounds, "requests": options.requests,
                    "concurrency": options.concurrency, "warmup": options.warmup,
                    "generator": options.generator},
        "rounds": [{"server": r.contender, "round": r.number,
                    "warmup_errors": r.warmup_errors,
                    "wal_per_request": {step: {k: round(v, 3) for k, v in figures.items()}
                                        for step, figures in r.wal.items()},
                    "results": [res.as_json() | {"server_cpu_ms_per_request":
                                                 round(server_cpu(res), 3)}
                                for res in r.results.values()]}
                   for rounds in by_name.values() for r in rounds],
        "medians": {name: {step: {k: round(v, 3) for k, v in
                                  median_figures(by_name[name], step).items()}
                           for step in EVERY_STEP} for name in names},
        "ratios_otesse_over": {peer: {step: {k: round(v, 3) for k, v in
                                             median_ratios(by_name[names[0]], by_name[peer],
                                                           step).items()}
                                      for step in EVERY_STEP} for peer in names[1:]},
        "errors": sum(r.errors for rounds in by_name.values() for r in rounds),
    }


async def durable_commits(database_url: str) -> str:
    """Postgres's ``synchronous_commit`` as the services' connections get it (server, database
    and role settings); raises unless a commit waits for its WAL to be flushed."""
    connection = await asyncpg.connect(database_url)
    try:
        synchronous_commit = await connection.fetchval("SHOW synchronous_commit")
        fsync = await connection.fetchval("SHOW fsync")
    finally:
        await connection.close()
    if synchronous_commit != "on" or fsync != "on":
        raise StackFailed(f"Postgres has synchronous_commit = {synchronous_commit}, fsync = "
                          f"{fsync}: a refresh token could be answered before it is on disk; "
                          "the comparison needs both on")
    return str(synchronous_commit)


def contender_name(ref: str | None, venv: Path, *, other_venv: Path | None = None,
                   taken: str | None = None) -> str:
    """How the report names Otesse as of ``ref`` (None: the working tree) on ``venv``: with
    the virtualenv's name when the other Otesse of the run (``other_venv``) runs on another
    one. A name already ``taken`` (an A/A run: the same code on the same interpreter, to see
    the noise) is told apart, so the rounds of one are never counted as the other's."""
    name = f"Otesse @ {baseline.describe(ref)}" if ref else "Otesse"
    if other_venv is not None and venv.resolve() != other_venv.resolve():
        name += f" on {venv.name}"
    return f"{name} (baseline)" if name == taken else name


@contextlib.asynccontextmanager
async def _otesse(name: str, root: Path, database_url: str, redis_url: str,
                  redis_prefix: str, log_path: Path, *, production: AsInProduction,
                  venv: Path) -> AsyncIterator[Contender]:
    """Otesse's stack from the source tree ``root``, signed in and consented, as a contender."""
    async with running_stack(database_url=database_url, redis_url=redis_url,
                             log_path=log_path, root=root, redis_prefix=redis_prefix,
                             production=production, venv=venv) as stack:
        async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30.0) as browser:
            await flow.sign_in_and_consent(browser, person=stack.person, app=stack.app)
            session = flow.session_cookie(browser)
        yield Contender(name=name, base_url=stack.gateway_url,
                        authorize_path="/oauth/authorize", token_path="/oauth/token",
                        token_url=stack.token_public_url,
                        app=stack.app, session=session, pids=stack.pids,
                        database_name=stack.database_name,
                        prefixes=("otesse_at_", "otesse_rt_"), database_url=database_url,
                        token_grpc=stack.token_grpc)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.compare",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, metavar="N",
                        help=f"alternating rounds of each server (default {DEFAULT_ROUNDS})")
    command.add_load_arguments(parser, requests=DEFAULT_REQUESTS,
                               concurrency=DEFAULT_CONCURRENCY)
    parser.add_argument("--peer", choices=("both", "redis", "memory", "none"), default="both",
                        help="node-oidc-provider's storage: its Redis adapter, its in-memory "
                             "one, both (default), or none (with --baseline: Otesse alone)")
    parser.add_argument("--baseline", metavar="REF", default=None,
                        help="also run Otesse as of this git commit (its own database and "
                             "Redis prefix), in the same alternating rounds: a before/after")
    parser.add_argument("--candidate", metavar="REF", default=None,
                        help="run Otesse as of this git commit instead of the working tree")
    command.add_venv_argument(parser)
    parser.add_argument("--baseline-venv", type=Path, default=None, metavar="PATH",
                        help="the virtualenv the baseline's services run on (default: "
                             "--venv's)")
    command.add_production_arguments(parser)
    parser.add_argument("--generator", choices=("wrk", "asyncio"), default="wrk",
                        help="who sends the HTTP steps: wrk (default; bench/wrk.py), or this "
                             "process's asyncio client (bench/http1.py), to see what a load "
                             "generator's own CPU does to the figures")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    command.add_store_arguments(parser, database="Otesse's database")
    args = parser.parse_args(argv)
    if args.baseline_venv is None:
        args.baseline_venv = args.venv
    if args.peer == "none" and args.baseline is None:
        parser.error("--peer none compares nothing without --baseline")
    if min(args.rounds, args.requests, args.concurrency) < 1 or (args.warmup or 0) < 0:
        parser.error("--rounds, --requests and --concurrency must be at least 1, --warmup at "
                     "least 0")
    return args


async def main(argv: list[str]) -> int:
    args = parse(argv)
    command.cancel_on_sigterm()
    options = Options(rounds=args.rounds, requests=args.requests,
                      concurrency=args.concurrency, warmup=command.warmup(args),
                      generator=args.generator)
    every: dict[str, tuple[Storage, ...]] = {"both": ("redis", "memory"), "redis": ("redis",),
                                             "memory": ("memory",), "none": ()}
    storages = every[args.peer]
    production = command.as_in_production(args)
    before = report.machine()
    quiet = args.json
    command.say("bench-peer: starting Otesse"
        + (f", Otesse @ {args.baseline}" if args.baseline else "")
        + (f" and node-oidc-provider {VERSION} ({', '.join(storages)})" if storages else "")
        + f" (load average {before['load_average'][0]})", quiet=quiet)
    by_name: dict[str, list[Round]] = {}
    run = secrets.token_hex(3)
    try:
        async with contextlib.AsyncExitStack() as exits:
            # --candidate: a commit instead of the working tree, so the tree may change while
            # the rounds run.
            candidate = (exits.enter_context(baseline.checkout(args.candidate, args.venv))
                         if args.candidate else ROOT)
            contenders = [await exits.enter_async_context(_otesse(
                contender_name(args.candidate, args.venv, other_venv=(
                    args.baseline_venv if args.baseline else None)), candidate,
                f"{args.database_url}_{run}", args.redis_url,
                f"{REDIS_PREFIX[:-1]}-{run}:", RESULTS / "stack.log",
                production=production, venv=args.venv))]
            synchronous_commit = await durable_commits(f"{args.database_url}_{run}")
            command.say(f"bench-peer: Postgres synchronous_commit = {synchronous_commit}: every "
                "refresh token Otesse answers is on disk first", quiet=quiet)
            if args.baseline is not None:
                root = exits.enter_context(baseline.checkout(args.baseline,
                                                             args.baseline_venv))
                contenders.append(await exits.enter_async_context(_otesse(
                    contender_name(args.baseline, args.baseline_venv, other_venv=args.venv,
                                   taken=contenders[0].name), root,
                    f"{args.database_url}_{BASELINE}_{run}", args.redis_url,
                    f"{REDIS_PREFIX[:-1]}-{BASELINE}-{run}:", RESULTS / "stack-baseline.log",
                    production=production, venv=args.baseline_venv)))
            for storage in storages:
                peer = await exits.enter_async_context(running_reference(
                    storage, redis_url=args.redis_url, prefix=f"{PEER_PREFIX[:-1]}-{run}:",
                    log_path=RESULTS / f"peer-{storage}.log"))
                contenders.append(Contender(
                    name=peer.name, base_url=peer.base_url, authorize_path="/auth",
                    token_path="/token", app=peer.app, session=peer.session,
                    pids={"node": peer.pid}, database_name=None))
            node = await node_version()
            for number in range(1, options.rounds + 1):
                for contender in contenders:
                    command.say(f"bench-peer: round {number}/{options.rounds}: {contender.name}",
                        quiet=quiet)
                    database_url = contender.database_url or args.database_url
                    meter = CpuMeter(services=contender.pids,
                                     database_name=contender.database_name,
                                     database_url=database_url,
                                     redis_url=args.redis_url)
                    await meter.open()
                    database = (await asyncpg.connect(database_url)
                                if contender.database_name else None)
                    try:
                        measured = await measure(contender, options, meter, number,
                                                 database)
                    finally:
                        await meter.close()
                        if database is not None:
                            await database.close()
                    by_name.setdefault(contender.name, []).append(measured)
    except (StackFailed, StepFailed) as exc:
        return command.failed("bench-peer", exc)
    except asyncio.CancelledError:
        return command.interrupted("bench-peer", "every server is stopped and Otesse's "
                                                 "database dropped")
    after = report.machine()
    # Each asks the interpreter itself (a process): once, for the file and the text alike.
    ran_on = interpreter(args.venv)
    baseline_ran_on = interpreter(args.baseline_venv) if args.baseline else None
    context = {"machine": {**before, "load_average_after": after["load_average"],
                           "note": "the load generator shares these cores with every server"},
               "peer": {"package": "oidc-provider", "version": VERSION, "node": node,
                        "storages": list(storages)},
               "baseline": args.baseline,
               "interpreter": ran_on,
               "baseline_interpreter": baseline_ran_on,
               "postgres_synchronous_commit": synchronous_commit,
               "as_in_production": asdict(production)}
    document = as_json(by_name, options, context)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "peer.json").write_text(json.dumps(document, indent=2) + "\n")
    header = [
        f"Otesse vs node-oidc-provider {VERSION} (Node {node}): {options.rounds} alternating "
        f"rounds, {options.requests} requests per measurement, concurrency "
        f"{options.concurrency}, warm-up {options.warmup}; the HTTP steps sent by "
        + ("wrk" if options.generator == "wrk" else "this process's asyncio client"),
        f"Otesse's services ran on {ran_on}"
        + (f"; the baseline's on {baseline_ran_on}." if baseline_ran_on else "."),
        f"Otesse ran with {production.describe()}; "
        f"Postgres synchronous_commit = {synchronous_commit}. The load generator shares the "
        f"machine's {before['cores']} cores with every server (load average before: "
        f"{' '.join(map(str, before['load_average']))}).",
    ]
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(text(by_name, options, header))
        print(f"Load average after: {' '.join(map(str, after['load_average']))}; results in "
              f"{RESULTS / 'peer.json'}")
    return 1 if document["errors"] else 0


if __name__ == "__main__":
    sys.exit(uvloop.run(main(sys.argv[1:])))

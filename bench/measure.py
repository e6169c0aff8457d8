"""The measurements, in the order of the documented flow, each after a warm-up.

1. ``authorize``: ``GET /oauth/authorize`` for a user who already approved → 302 with a code
   (the codes are kept for step 2).
2. ``exchange``: ``POST /oauth/token`` (authorization_code, the documented JSON) with those
   codes; each answer's pair is kept.
3. ``refresh``: ``POST /oauth/token`` (refresh_token) on C independent chains (C = the
   concurrency), so each chain rotates strictly one refresh after another, as a real client does.
4. ``validate (gRPC)``: ``TokenService.ValidateToken`` straight to the token service's gRPC port,
   cycling over every pair: mostly each token's first validation (the warm-up's tokens come
   round again at the end).
5. ``revalidate (gRPC)``: the same call on a few tokens (4 × C) over and over, as a client's
   API calls present its one token all hour: the token service verifies each signature once
   (``OTESSE_TOKEN_VERIFIED_CACHE_SIZE``).
6. ``GET /v1/bookings``: the bookings API, which validates the token over gRPC (the kit).

For context, the same authorize, exchange and refresh straight to the authorize and token
services (no gateway), so the gateway's share of a request is visible.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import httpx

from bench import flow, load
from bench.cpu import CpuMeter, per_request
from bench.http1 import Client
from bench.load import Result, StepFailed
from bench.procs import rss_of
from bench.stack import Stack
from otesse.auth.v1 import token_pb2_grpc
from services.common.grpc_client import create_channel


@dataclass(frozen=True)
class Options:
    requests: int
    concurrency: int
    warmup: int

    @property
    def direct_requests(self) -> int:
        """The context measurements (no gateway) are half as long."""
        return max(1, self.requests // 2)


@dataclass
class Measurements:
    results: list[Result]
    warmup_errors: int = 0
    warmup_error_samples: tuple[str, ...] = ()

    @property
    def errors(self) -> int:
        return self.warmup_errors + sum(r.errors for r in self.results)


class _Runner:
    def __init__(self, options: Options, meter: CpuMeter | None,
                 measurements: Measurements) -> None:
        self._options = options
        self._meter = meter
        self._out = measurements

    async def warm(self, name: str, step: Callable[[int], Awaitable[None]], total: int) -> None:
        if not total:
            return
        warm = await load.run(f"{name} (warm-up)", step, total=total,
                              concurrency=self._options.concurrency)
        self._out.warmup_errors += warm.errors
        self._out.warmup_error_samples += warm.error_samples

    async def measure(self, name: str, step: Callable[[int], Awaitable[None]],
                      total: int) -> Result:
        before = await self._meter.snapshot() if self._meter else {}
        result = await load.run(name, step, total=total, concurrency=self._options.concurrency)
        if self._meter:
            after = await self._meter.snapshot()
            result = replace(result, cpu_ms=per_request(before, after, result.requests),
                             rss_kib=rss_of(self._meter.services))
        self._out.results.append(result)
        return result


async def measure_all(stack: Stack, options: Options, meter: CpuMeter | None = None,
                      ) -> Measurements:
    out = Measurements(results=[])
    runner = _Runner(options, meter, out)
    n, w, c, d = options.requests, options.warmup, options.concurrency, options.direct_requests
    app = stack.app
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30.0) as signing_in:
        await flow.sign_in_and_consent(signing_in, person=stack.person, app=app)
        session = flow.session_cookie(signing_in)
    async with (Client(stack.gateway_url, connections=c, headers=session) as browser,
                Client(stack.authorize_url, connections=c, headers=session) as authorize_direct,
                # The token endpoint where production's ingress sends it: the token service's
                # own edge (the gateway, for a tree without one).
                Client(stack.token_public_url, connections=c) as api,
                Client(stack.token_url, connections=c) as token_direct,
                Client(stack.bookings_url, connections=c) as bookings):
        # 1. Authorize, keeping the codes (the warm-up's feed the exchange's warm-up).
        warm_codes = await _codes(runner, "authorize", browser, app, w, warm=True)
        codes = await _codes(runner, "authorize", browser, app, n)
        direct_codes = await _codes(runner, "authorize (direct)", authorize_direct, app, d)

        # 2. Exchange those codes (60 s to live: they are spent right away).
        await _exchanges(runner, "exchange", api, app, warm_codes, warm=True)
        tokens = await _exchanges(runner, "exchange", api, app, codes)
        await _exchanges(runner, "exchange (direct)", token_direct, app, direct_codes)
        pairs = [t for t in tokens if t is not None]
        if len(pairs) < c:
            raise StepFailed(f"only {len(pairs)} exchanges succeeded; {c} refresh chains "
                             "need as many")

        # 3. Refresh: C chains, each strictly sequential.
        chains: asyncio.Queue[str] = asyncio.Queue()
        for pair in pairs[:c]:
            chains.put_nowait(pair.refresh_token)
        await runner.warm("refresh", _refresh_step(api, app, chains), w)
        await runner.measure("refresh", _refresh_step(api, app, chains), n)
        await runner.measure("refresh (direct)", _refresh_step(token_direct, app, chains), d)

        # 4. Validation over gRPC, as internal services do, first sightings then the same few
        # tokens again; 6. the bookings API.
        access = itertools.cycle([p.access_token for p in pairs])
        scopes = app.scope.split()
        channel = create_channel(stack.token_grpc, services=("otesse.auth.v1.TokenService",))
        try:
            stub = token_pb2_grpc.TokenServiceStub(channel)

            async def validate(_: int) -> None:
                await flow.validate(stub, next(access), scopes)

            await runner.warm("validate (gRPC)", validate, w)
            await runner.measure("validate (gRPC)", validate, n)

            again = itertools.cycle([p.access_token for p in pairs[:4 * c]])

            async def revalidate(_: int) -> None:
                await flow.validate(stub, next(again), scopes)

            await runner.warm("revalidate (gRPC)", revalidate, w)
            await runner.measure("revalidate (gRPC)", revalidate, n)
        finally:
            await channel.close()

        async def call_api(_: int) -> None:
            await flow.list_bookings(bookings, next(access))

        await runner.warm("GET /v1/bookings", call_api, w)
        await runner.measure("GET /v1/bookings", call_api, n)
    return out


async def _codes(runner: _Runner, name: str, browser: Client, app: flow.App,
                 total: int, *, warm: bool = False) -> list[str | None]:
    codes: list[str | None] = [None] * total

    async def step(index: int) -> None:
        codes[index] = await flow.authorize(browser, app)

    if warm:
        await runner.warm(name, step, total)
    else:
        await runner.measure(name, step, total)
    return codes


async def _exchanges(runner: _Runner, name: str, api: Client, app: flow.App,
                     codes: list[str | None], *, warm: bool = False) -> list[flow.Tokens | None]:
    tokens: list[flow.Tokens | None] = [None] * len(codes)

    async def step(index: int) -> None:
        code = codes[index]
        if code is None:
            raise StepFailed("no code to exchange (its authorization failed)")
        tokens[index] = await flow.exchange(api, app, code)

    if warm:
        await runner.warm(name, step, len(codes))
    else:
        await runner.measure(name, step, len(codes))
    return tokens


def _refresh_step(api: Client, app: flow.App,
                  chains: asyncio.Queue[str]) -> Callable[[int], Awaitable[None]]:
    async def step(_: int) -> None:
        token = await chains.get()
        try:
            token = (await flow.refresh(api, app, token)).refresh_token
        finally:
            # The next refresh of this chain waits for this one: never two at once.
            chains.put_nowait(token)

    return step

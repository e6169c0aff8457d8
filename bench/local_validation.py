"""``python -m bench.local_validation`` (``make bench-local``): what local validation costs and
how fast a revocation reaches it (issue #14).

Starts the whole stack (:mod:`bench.stack`), mints access tokens through the gateway, and
measures, in this order:

1. ``ValidateToken`` over gRPC (C in flight) with no revocation subscriber: req/s and the token
   service's CPU per call (the reference, measured in the same run);
2. the token service's CPU at rest, with no subscriber and then with ``--subscribers``
   ``LocalTokenValidator`` subscriptions: the feed's cost per subscriber;
3. ``ValidateToken`` again with those subscribers connected;
4. ``LocalTokenValidator`` in this process: the first sight of a token (one ES256
   verification), a token seen again (remembered claims), and a mix where each token serves 20
   calls with a scope check, as checks per second per core (this process's CPU time);
5. the time from a revocation until every one of ``--watchers`` validators refuses the token:
   ``POST /oauth/revoke`` (the refresh token, through the gateway), the Authorized apps revoke
   (``RevokeGrant`` for the user and the app, as the authorize service sends it) and a refresh
   token reused, each ``--samples`` times, at rest and then under load (``ValidateToken`` and
   refreshes running meanwhile).

Results go to standard output and ``bench/results/local.json``; the exit code is 1 when a step
failed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import uvloop

from bench import command, flow
from bench.cpu import process_seconds
from bench.http1 import Client
from bench.load import StepFailed, percentile, run
from bench.stack import (
    DATABASE_URL,
    REDIS_URL,
    Stack,
    StackFailed,
    interpreter,
    running_stack,
)
from otesse.auth.v1 import token_pb2, token_pb2_grpc
from services.common.grpc_client import create_channel
from services.common.service_auth import caller_interceptors
from services.common.settings import Env, ServiceCredentialSettings
from services.resource_kit import LocalTokenValidator

RESULTS = Path(__file__).resolve().parent / "results"
CALLS_PER_TOKEN = 20


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.local_validation",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1000, help="distinct access tokens")
    parser.add_argument("--requests", type=int, default=3000,
                        help="ValidateToken calls per measurement")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--subscribers", type=int, default=32,
                        help="subscriptions while the feed's cost is measured")
    parser.add_argument("--watchers", type=int, default=4,
                        help="validators that must all refuse a revoked token")
    parser.add_argument("--samples", type=int, default=20, help="revocations per path")
    parser.add_argument("--rest-seconds", type=float, default=10.0,
                        help="how long the token service's CPU at rest is read")
    command.add_venv_argument(parser)
    parser.add_argument("--database-url", default=DATABASE_URL)
    parser.add_argument("--redis-url", default=REDIS_URL)
    args = parser.parse_args(argv)
    if min(args.tokens, args.requests, args.concurrency, args.subscribers, args.watchers,
           args.samples) < 1:
        parser.error("every count must be at least 1")
    return args


def claims_of(access_token: str) -> dict[str, Any]:
    payload = access_token[len("otesse_at_"):].split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "==="))
    return decoded


class Bench:
    def __init__(self, stack: Stack, args: argparse.Namespace) -> None:
        self.stack = stack
        self.args = args
        self.out: dict[str, Any] = {}
        self.token_pid = stack.pids["token"]
        self.issuer = ""
        self.load_errors = 0

    def validator(self, **options: Any) -> LocalTokenValidator:
        return LocalTokenValidator(self.stack.token_grpc,
                                   f"{self.stack.token_url}/.well-known/jwks.json",
                                   issuer=self.issuer,
                                   audience="https://api.otesse.com", **options)

    async def grants(self, person: flow.Person, app: flow.App, count: int,
                     ) -> list[flow.Tokens]:
        async with httpx.AsyncClient(base_url=self.stack.gateway_url, timeout=30) as signing:
            await flow.sign_in_and_consent(signing, person=person, app=app)
            session = flow.session_cookie(signing)
        made: list[flow.Tokens] = []
        async with Client(self.stack.gateway_url, connections=16, headers=session) as browser, \
                Client(self.stack.gateway_url, connections=16) as api:
            async def one(_: int) -> None:
                made.append(await flow.exchange(api, app, await flow.authorize(browser, app)))

            result = await run("mint", one, total=count, concurrency=16)
            if result.errors:
                raise StepFailed(f"minting tokens: {result.error_samples}")
        return made

    async def validate_token(self, name: str, tokens: list[flow.Tokens]) -> dict[str, Any]:
        access = itertools.cycle([t.access_token for t in tokens])
        channel = create_channel(self.stack.token_grpc,
                                 services=("otesse.auth.v1.TokenService",))
        try:
            stub = token_pb2_grpc.TokenServiceStub(channel)

            async def step(_: int) -> None:
                await flow.validate(stub, next(access), ["bookings:read"])

            await run(name, step, total=self.args.requests // 5,
                      concurrency=self.args.concurrency)
            cpu_before = process_seconds(self.token_pid)
            result = await run(name, step, total=self.args.requests,
                               concurrency=self.args.concurrency)
            cpu = process_seconds(self.token_pid) - cpu_before
        finally:
            await channel.close()
        if result.errors:
            raise StepFailed(f"{name}: {result.error_samples}")
        line = {"rps": round(result.rps), "p50_ms": round(result.p50_ms, 3),
                "p99_ms": round(result.p99_ms, 3),
                "token_cpu_ms_per_call": round(cpu * 1000 / result.requests, 3)}
        print(f"{name:<40} {line['rps']:>6} req/s  p50 {line['p50_ms']:.2f} ms  "
              f"p99 {line['p99_ms']:.2f} ms  token CPU {line['token_cpu_ms_per_call']} ms/call",
              file=sys.stderr)
        return line

    async def token_cpu_at_rest(self) -> float:
        """CPU seconds per second of the token service over ``--rest-seconds``."""
        before = process_seconds(self.token_pid)
        await asyncio.sleep(self.args.rest_seconds)
        used: float = process_seconds(self.token_pid) - before
        seconds: float = self.args.rest_seconds
        return used / seconds

    @staticmethod
    async def current(validators: list[LocalTokenValidator]) -> None:
        async with asyncio.timeout(30):
            while not all(v.current for v in validators):
                await asyncio.sleep(0.01)

    @staticmethod
    async def subscribers_current(holder: asyncio.subprocess.Process) -> None:
        """Waits for the holder's ``current``. A line before it (a library writing to standard
        output) is kept for the error, not taken for the answer; a holder that ends first fails
        the step with its exit status and what it printed."""
        assert holder.stdout is not None
        printed: list[str] = []
        try:
            async with asyncio.timeout(60):
                while line := await holder.stdout.readline():
                    if line.strip() == b"current":
                        return
                    printed.append(line.decode(errors="replace").rstrip())
                status = await holder.wait()
        except TimeoutError:
            raise StepFailed(f"the subscribers were not current after 60 s; the holder "
                             f"printed {printed!r}") from None
        raise StepFailed(f"the subscribers' holder ended with status {status} before they "
                         f"were current; it printed {printed!r}")

    async def local_checks(self, tokens: list[flow.Tokens]) -> dict[str, Any]:
        access = [t.access_token for t in tokens]
        scopes = ("bookings:read",)
        uncached = self.validator(cache_entries=0)
        cached = self.validator()
        try:
            await self.current([uncached, cached])
            for token in access[:50]:  # keys fetched, code warm
                await uncached.validate(token, required_scopes=scopes)
            started = time.process_time()
            for token in access:
                if not (await uncached.validate(token, required_scopes=scopes)).active:
                    raise StepFailed("a fresh token was refused locally")
            first_ms = (time.process_time() - started) * 1000 / len(access)
            for token in access:
                await cached.validate(token, required_scopes=scopes)
            started = time.process_time()
            for _ in range(CALLS_PER_TOKEN - 1):
                for token in access:
                    await cached.validate(token, required_scopes=scopes)
            repeat_ms = (time.process_time() - started) * 1000 / (
                len(access) * (CALLS_PER_TOKEN - 1))
            # The mix: each token's first sight, then 19 more calls, with a scope check.
            mixed = self.validator()
            await self.current([mixed])
            checks = 0
            started = time.process_time()
            for token in access:
                for _ in range(CALLS_PER_TOKEN):
                    await mixed.validate(token, required_scopes=scopes)
                    checks += 1
            per_core = checks / (time.process_time() - started)
            await mixed.close()
        finally:
            await uncached.close()
            await cached.close()
        line = {"first_sight_ms": round(first_ms, 4), "repeat_ms": round(repeat_ms, 4),
                "checks_per_second_per_core_20_calls_per_token": round(per_core)}
        print(f"local check: first sight {first_ms:.3f} ms, again {repeat_ms:.4f} ms, "
              f"{per_core:,.0f} checks/s per core (20 calls per token, scope checked)",
              file=sys.stderr)
        return line

    async def revocations(self, watchers: list[LocalTokenValidator], label: str,
                          ) -> dict[str, Any]:
        person, app = self.stack.clients[0]
        key = ServiceCredentialSettings.from_env(Env({})).key_bytes
        channel = create_channel(self.stack.token_grpc,
                                 services=("otesse.auth.v1.TokenService",),
                                 interceptors=caller_interceptors(key, caller="authorize",
                                                                  audience="token"))
        stub = token_pb2_grpc.TokenServiceStub(channel)
        results: dict[str, Any] = {}
        try:
            async with Client(self.stack.gateway_url, connections=4) as api:
                async def by_endpoint(tokens: flow.Tokens) -> Callable[[], Awaitable[None]]:
                    async def go() -> None:
                        response = await api.post_json("/oauth/revoke", {
                            "token": tokens.refresh_token, "client_id": app.client_id,
                            "client_secret": app.client_secret})
                        if response.status != 200:
                            raise StepFailed(f"revoke: {response.status}")
                    return go

                async def by_authorized_apps(tokens: flow.Tokens,
                                             ) -> Callable[[], Awaitable[None]]:
                    user = str(claims_of(tokens.access_token)["sub"])

                    async def go() -> None:
                        await stub.RevokeGrant(token_pb2.RevokeGrantRequest(
                            user_id=user, client_id=app.client_id), timeout=5)
                    return go

                async def by_reuse(tokens: flow.Tokens) -> Callable[[], Awaitable[None]]:
                    second = await flow.refresh(api, app, tokens.refresh_token)
                    await flow.refresh(api, app, second.refresh_token)

                    async def go() -> None:
                        try:
                            await flow.refresh(api, app, tokens.refresh_token)
                        except StepFailed:
                            return  # 400 invalid_grant: the reuse was refused and revoked
                        raise StepFailed("a reused refresh token was accepted")
                    return go

                paths = {"POST /oauth/revoke": by_endpoint,
                         "Authorized apps revoke": by_authorized_apps,
                         "refresh token reuse": by_reuse}
                for name, prepare in paths.items():
                    samples = []
                    for _ in range(self.args.samples):
                        # One grant at a time: revoking an app at Authorized apps ends every
                        # grant of that user and app.
                        [tokens] = await self.grants(person, app, 1)
                        await self.current(watchers)
                        for watcher in watchers:
                            if not (await watcher.validate(tokens.access_token)).active:
                                raise StepFailed("a fresh token was refused")
                        act = await prepare(tokens)
                        started = time.perf_counter()
                        await act()
                        pending = list(watchers)
                        async with asyncio.timeout(10):
                            while pending:
                                pending = [w for w in pending if (await w.validate(
                                    tokens.access_token)).reason != "revoked"]
                                if pending:
                                    await asyncio.sleep(0.0005)
                        samples.append(time.perf_counter() - started)
                    results[name] = {"p50_ms": round(percentile(samples, 0.5) * 1000, 1),
                                     "p99_ms": round(percentile(samples, 0.99) * 1000, 1),
                                     "samples": len(samples)}
                    print(f"revoke → {len(watchers)} refuse, {label:<10} {name:<24} "
                          f"p50 {results[name]['p50_ms']:>6.1f} ms  "
                          f"p99 {results[name]['p99_ms']:>6.1f} ms", file=sys.stderr)
        finally:
            await channel.close()
        return results

    async def load(self, tokens: list[flow.Tokens], stop: asyncio.Event) -> None:
        """ValidateToken (8 in flight) and refresh chains (4) until ``stop``."""
        _, app = self.stack.clients[1]
        access = itertools.cycle([t.access_token for t in tokens])
        channel = create_channel(self.stack.token_grpc,
                                 services=("otesse.auth.v1.TokenService",))
        stub = token_pb2_grpc.TokenServiceStub(channel)
        chains = [t.refresh_token for t in tokens[:4]]

        async def validating() -> None:
            while not stop.is_set():
                try:
                    await flow.validate(stub, next(access), ["bookings:read"])
                except Exception:  # noqa: BLE001 - the load is background: counted, not fatal
                    self.load_errors += 1
                    await asyncio.sleep(0.01)

        async with Client(self.stack.gateway_url, connections=4) as api:
            async def refreshing(chain: int) -> None:
                while not stop.is_set():
                    try:
                        chains[chain] = (await flow.refresh(api, app, chains[chain])
                                         ).refresh_token
                    except Exception:  # noqa: BLE001 - counted (a rate limit, say)
                        self.load_errors += 1
                        await asyncio.sleep(0.05)

            try:
                await asyncio.gather(*(validating() for _ in range(8)),
                                     *(refreshing(i) for i in range(len(chains))))
            finally:
                await channel.close()

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.stack.token_url) as http:
            metadata = await http.get("/.well-known/oauth-authorization-server")
            self.issuer = metadata.json()["issuer"]
        print(f"minting {self.args.tokens} access tokens; the services run on "
              f"{interpreter(self.args.venv)}", file=sys.stderr)
        person, app = self.stack.clients[1]
        tokens = await self.grants(person, app, self.args.tokens)
        self.out["validate_token_no_subscriber"] = await self.validate_token(
            "ValidateToken, no subscriber", tokens)
        rest = await self.token_cpu_at_rest()
        count = self.args.subscribers
        # The subscribers live in a process of their own, so they do not slow the load
        # generator of the ValidateToken measurement.
        holder = await asyncio.create_subprocess_exec(
            # -X faulthandler: a holder that crashes says where, on the shared standard error.
            sys.executable, "-X", "faulthandler", "-m", "bench.local_validation",
            "--hold-subscribers", str(count),
            self.stack.token_grpc, f"{self.stack.token_url}/.well-known/jwks.json",
            self.issuer, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        try:
            await self.subscribers_current(holder)
            with_subscribers = await self.token_cpu_at_rest()
            self.out["validate_token_with_subscribers"] = await self.validate_token(
                f"ValidateToken, {count} subscribers", tokens)
        finally:
            if holder.returncode is None:
                holder.terminate()
            await holder.wait()
        per_subscriber_ms = max(0.0, with_subscribers - rest) * 1000 / count
        self.out["feed_cpu_ms_per_second_per_subscriber"] = round(per_subscriber_ms, 3)
        self.out["token_cpu_at_rest_ms_per_second"] = {
            "no_subscriber": round(rest * 1000, 2),
            f"{count}_subscribers": round(with_subscribers * 1000, 2)}
        print(f"feed: token CPU at rest {rest * 1000:.2f} ms/s with none, "
              f"{with_subscribers * 1000:.2f} ms/s with {count} subscribers: "
              f"{per_subscriber_ms:.3f} ms/s per subscriber", file=sys.stderr)
        watchers = [self.validator() for _ in range(self.args.watchers)]
        try:
            await self.current(watchers)
            self.out["local"] = await self.local_checks(tokens)
            self.out["revoke_at_rest"] = await self.revocations(watchers, "at rest")
            stop = asyncio.Event()
            loader = asyncio.create_task(self.load(tokens, stop))
            try:
                await asyncio.sleep(1)
                self.out["revoke_under_load"] = await self.revocations(watchers, "under load")
            finally:
                stop.set()
                await loader
            self.out["load_errors"] = self.load_errors
            if self.load_errors:
                print(f"the load met {self.load_errors} errors (a rate limit?)", file=sys.stderr)
        finally:
            for validator in watchers:
                await validator.close()


async def hold_subscribers(count: int, grpc_target: str, jwks_url: str, issuer: str) -> int:
    """``count`` subscriptions, held until this process is terminated; prints ``current``
    once every one of them is."""
    validators = [LocalTokenValidator(grpc_target, jwks_url, issuer=issuer,
                                      audience="https://api.otesse.com")
                  for _ in range(count)]
    await Bench.current(validators)
    print("current", flush=True)
    await asyncio.Event().wait()
    return 0


async def main(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    current = asyncio.current_task()
    assert current is not None
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, current.cancel)
    RESULTS.mkdir(parents=True, exist_ok=True)
    try:
        async with running_stack(database_url=args.database_url, redis_url=args.redis_url,
                                 log_path=RESULTS / "stack-local.log", clients=2,
                                 venv=args.venv) as stack:
            bench = Bench(stack, args)
            await bench.run()
    except (StackFailed, StepFailed) as exc:
        print(f"bench-local: {exc}", file=sys.stderr)
        return 1
    except asyncio.CancelledError:
        return 130
    (RESULTS / "local.json").write_text(json.dumps(bench.out, indent=2) + "\n")
    print(json.dumps(bench.out, indent=2))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--hold-subscribers"]:
        sys.exit(uvloop.run(hold_subscribers(int(sys.argv[2]), *sys.argv[3:6])))
    sys.exit(uvloop.run(main(parse(sys.argv[1:]))))

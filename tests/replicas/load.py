"""Steady load: clients running the whole documented flow, over and over, counting every answer.

Each :class:`FlowClient` is a person with an app of their own. It signs in and consents once
through the public entry (a real browser's forms), then loops: authorize (signed in, consent
remembered: straight back with a code) → exchange the code → refresh → ``ValidateToken`` over
gRPC → ``GET /v1/bookings``. Every request that does not get the documented answer is a failure,
recorded with its step and what came back. A refresh that fails is sent again with the same
refresh token — what a client does when it lost an answer — until it gets its pair.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode, urljoin

import asyncpg
import grpc
import httpx

from otesse.auth.v1 import token_pb2, token_pb2_grpc
from tests.integration.people import (
    FormBrowser,
    RegisteredApp,
    callback_params,
    new_person,
    register_app,
)
from tests.replicas.cluster import Cluster

CALLBACK = "http://127.0.0.1:8765/callback"
SCOPE = "bookings:read"
# Between two flows of one client: the load stays bounded on a shared 2-core machine.
PAUSE_SECONDS = 0.02
REFRESH_RETRIES = 5


@dataclass(frozen=True)
class Failure:
    step: str
    what: str
    at: float


@dataclass
class Tally:
    """Requests and failures of one phase, over every client."""

    requests: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: list[Failure] = field(default_factory=list)
    flows: int = 0
    refresh_retries_answered: int = 0

    @property
    def total(self) -> int:
        return sum(self.requests.values())


class FlowClient:
    def __init__(self, cluster: Cluster, app: RegisteredApp, browser: FormBrowser,
                 tokens: token_pb2_grpc.TokenServiceAsyncStub,
                 bookings: httpx.AsyncClient, tally: Tally) -> None:
        self._cluster = cluster
        self._app = app
        self._browser = browser
        self._tokens = tokens
        self._bookings = bookings
        self.tally = tally
        self.refresh_token = ""
        self.access_token = ""

    @property
    def http(self) -> httpx.AsyncClient:
        return self._browser.http

    async def aclose(self) -> None:
        await self._browser.http.aclose()

    def authorization_url(self) -> str:
        return self._cluster.public + "/oauth/authorize?" + urlencode({
            "client_id": self._app.client_id, "redirect_uri": CALLBACK,
            "response_type": "code", "scope": SCOPE, "state": "load"})

    def _fail(self, step: str, what: str) -> None:
        self.tally.failures.append(Failure(step, what, time.monotonic()))

    async def _post_token(self, step: str, form: dict[str, str]) -> dict[str, str] | None:
        self.tally.requests[step] += 1
        try:
            response = await self.http.post(
                "/oauth/token", data=form, auth=(self._app.client_id, self._app.client_secret))
        except httpx.HTTPError as exc:
            self._fail(step, type(exc).__name__)
            return None
        if response.status_code != 200:
            self._fail(step, f"{response.status_code} {response.text[:120]}")
            return None
        answer: dict[str, str] = response.json()
        return answer

    async def authorize(self) -> str | None:
        self.tally.requests["authorize"] += 1
        try:
            response = await self.http.get(self.authorization_url())
        except httpx.HTTPError as exc:
            self._fail("authorize", type(exc).__name__)
            return None
        location = urljoin(str(response.url), response.headers.get("location", ""))
        if response.status_code != 302 or not location.startswith(CALLBACK + "?"):
            self._fail("authorize", f"{response.status_code} {location[:120]}")
            return None
        return callback_params(location).get("code")

    async def exchange(self, code: str) -> bool:
        answer = await self._post_token("exchange", {
            "grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK})
        if answer is None:
            return False
        self.access_token, self.refresh_token = answer["access_token"], answer["refresh_token"]
        return True

    async def refresh(self) -> bool:
        """Refreshes, sending the same refresh token again after a failure (a lost answer)."""
        for attempt in range(REFRESH_RETRIES):
            answer = await self._post_token("refresh", {
                "grant_type": "refresh_token", "refresh_token": self.refresh_token})
            if answer is not None:
                self.tally.refresh_retries_answered += attempt > 0
                self.access_token = answer["access_token"]
                self.refresh_token = answer["refresh_token"]
                return True
            await asyncio.sleep(0.2)
        return False

    async def validate(self) -> bool:
        self.tally.requests["validate"] += 1
        try:
            result = await self._tokens.ValidateToken(
                token_pb2.ValidateTokenRequest(token=self.access_token,
                                               required_scopes=[SCOPE]), timeout=5)
        except grpc.aio.AioRpcError as exc:
            self._fail("validate", exc.code().name)
            return False
        if not result.active:
            self._fail("validate", token_pb2.ValidationReason.Name(result.reason))
        return bool(result.active)

    async def call_api(self) -> bool:
        self.tally.requests["bookings"] += 1
        try:
            response = await self._bookings.get(
                "/v1/bookings", headers={"Authorization": f"Bearer {self.access_token}"})
        except httpx.HTTPError as exc:
            self._fail("bookings", type(exc).__name__)
            return False
        if response.status_code != 200:
            self._fail("bookings", f"{response.status_code} {response.text[:120]}")
        return response.status_code == 200

    async def flow(self) -> None:
        code = await self.authorize()
        if code is None or not await self.exchange(code):
            return
        if await self.refresh() and await self.validate():
            await self.call_api()
        self.tally.flows += 1

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.flow()
            await asyncio.sleep(PAUSE_SECONDS)


async def signed_in_client(cluster: Cluster, pool: asyncpg.Pool,
                           tokens: token_pb2_grpc.TokenServiceAsyncStub,
                           bookings: httpx.AsyncClient, tally: Tally) -> FlowClient:
    """A new person and app; signed in and consented once, with a first pair of tokens."""
    app = await register_app(cluster.registry_grpc, redirect_uri=CALLBACK, scopes=SCOPE)
    person = await new_person(pool)
    browser = FormBrowser(cluster.public)
    client = FlowClient(cluster, app, browser, tokens, bookings, tally)
    callback = await browser.authorize(client.authorization_url(), person)
    assert await client.exchange(callback_params(callback)["code"]), tally.failures
    return client


class Load:
    """``clients`` flow clients running until :meth:`stop`; one :class:`Tally` per phase."""

    def __init__(self, clients: list[FlowClient]) -> None:
        self.clients = clients
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def phase(self) -> Tally:
        """Starts counting afresh; returns the new tally."""
        tally = Tally()
        for client in self.clients:
            client.tally = tally
        return tally

    def start(self) -> None:
        self._stop.clear()
        self._tasks = [asyncio.create_task(client.run(self._stop)) for client in self.clients]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        self._tasks = []

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()

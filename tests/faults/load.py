"""The fault suite's steady mixed load: people using apps, every answer recorded with its time.

Each :class:`LoadClient` is a person with an app of their own and a browser (a cookie jar) at
the gateway, running three loops at a bounded pace, as an app's users, the app's server and
the APIs it calls do at once:

* authorizations — ``authorize`` (``GET /oauth/authorize``: signed in and consented, straight
  back with a code; ``sign_in`` again first when the session was lost with Redis's data), then
  ``exchange`` (sent again after a 503, as an app would: the same code); now and then the code
  is sent twice at once instead (``double_exchange``: at most one answer may carry tokens).
  Each new grant joins the client's live ones; the oldest retires (kept for the check after
  the fault);
* refreshes — ``refresh`` of a live grant's newest refresh token (sent again after a 503 until
  it is answered: a refresh token answered 200 must never be lost), ``introspect`` now and
  then, and revocations (``revoke``: the refresh token, so the whole grant, or the access token
  alone);
* API calls — ``validate`` (``TokenService.ValidateToken`` over gRPC, as Otesse's APIs do) and
  ``bookings`` (``GET /v1/bookings`` on the example API) with a live grant's access token,
  ``jwks``, and checks that a token revoked earlier is still refused (``revoked_validate``,
  ``revoked_bookings``).

So a part that one step needs failing does not stop the steps that do not need it.

Every request has a deadline (:data:`DEADLINE_SECONDS`): one that reaches it is recorded as
``timeout``, a failure wherever it happens. Answers are recorded as outcomes: ``ok``, ``503``
(only with ``Retry-After`` and an RFC 6749 JSON body, or a clear HTML page on browser paths —
anything less is ``503-malformed``), ``UNAVAILABLE`` over gRPC, or what else came back. The
test decides which outcomes a fault allows (:mod:`tests.faults.test_faults`). Nothing here logs
or records a token: only outcomes and short reasons.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode, urljoin

import asyncpg
import grpc
import httpx

from otesse.auth.v1 import token_pb2, token_pb2_grpc
from tests.integration.people import (
    Person,
    RegisteredApp,
    callback_params,
    hidden_inputs,
    new_person,
    register_app,
)

DEADLINE_SECONDS = 5.0
CALLBACK = "http://127.0.0.1:8765/callback"
SCOPE = "bookings:read"
# Between two rounds of each loop, and before sending a request again after a 503: the load
# stays bounded on a shared machine.
AUTHORIZE_PAUSE_SECONDS = 0.3
REFRESH_PAUSE_SECONDS = 0.15
API_PAUSE_SECONDS = 0.15
RETRY_SECONDS = 0.2
# Grants each client keeps using; older ones retire.
LIVE_GRANTS = 3
# How long a client keeps sending one refresh token or code again before giving up.
GIVE_UP_SECONDS = 30.0
_REDIRECTS = (301, 302, 303, 307, 308)
VALID = token_pb2.VALIDATION_REASON_VALID
REVOKED = token_pb2.VALIDATION_REASON_REVOKED


@dataclass(frozen=True)
class Answer:
    step: str
    outcome: str
    started: float  # time.monotonic()
    ended: float
    note: str = ""


@dataclass
class Chain:
    """One grant as its app sees it: the newest pair."""

    app: RegisteredApp
    access_token: str
    refresh_token: str
    # Its revocation was asked for: from then on its tokens may be refused.
    revoking: bool = False


@dataclass(frozen=True)
class Revoked:
    """A token the load revoked (an access token, and the refresh token when the whole grant
    was revoked): it must be refused everywhere, for good."""

    app: RegisteredApp
    access_token: str
    refresh_token: str | None


@dataclass
class Record:
    """What the load saw, shared by every client."""

    answers: list[Answer] = field(default_factory=list)
    # Grants retired from use since the last check, each with its newest pair.
    chains: list[Chain] = field(default_factory=list)
    revoked: list[Revoked] = field(default_factory=list)
    # Every code, and how many exchanges of it were answered 200.
    exchanged: collections.Counter[str] = field(default_factory=collections.Counter)

    def add(self, answer: Answer) -> None:
        self.answers.append(answer)


def http_outcome(response: httpx.Response, *, api: bool) -> str:
    """``ok`` for a 2xx, ``503`` for a well-formed one, else the status and the error code."""
    if response.status_code < 300:
        return "ok"
    if response.status_code == 503:
        if "retry-after" not in response.headers:
            return "503-malformed (no Retry-After)"
        if api:
            try:
                error = response.json().get("error")
            except ValueError:
                error = None
            return "503" if error == "temporarily_unavailable" else "503-malformed (body)"
        html = response.headers.get("content-type", "").startswith("text/html")
        clear = "temporarily unavailable" in response.text.lower()
        return "503" if html and clear else "503-malformed (page)"
    if api and response.headers.get("content-type", "").startswith("application/json"):
        try:
            return f"{response.status_code} {response.json().get('error')}"
        except ValueError:
            pass
    return str(response.status_code)


class LoadClient:
    def __init__(self, *, gateway: str, bookings: httpx.AsyncClient, app: RegisteredApp,
                 person: Person, tokens: token_pb2_grpc.TokenServiceAsyncStub,
                 record: Record, seed: int) -> None:
        self._gateway = gateway
        self._bookings = bookings
        self.app = app
        self._person = person
        self._tokens = tokens
        self.record = record
        self._random = random.Random(seed)
        self.browser = httpx.AsyncClient(base_url=gateway, follow_redirects=False,
                                         timeout=DEADLINE_SECONDS * 2)
        # Grants in use.
        self.chains: list[Chain] = []
        # Access tokens this client asked to revoke on their own.
        self._revoking: set[str] = set()

    async def aclose(self) -> None:
        await self.browser.aclose()

    # -- sending, with a deadline, recording the outcome -----------------------------------
    async def _http(self, step: str, send: Callable[[], Awaitable[httpx.Response]], *,
                    api: bool, outcome: Callable[[httpx.Response], str] | None = None,
                    ) -> httpx.Response | None:
        """Sends within the deadline and records the outcome (``outcome`` decides it for
        answers other than a 503, which is always judged by :func:`http_outcome`)."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(DEADLINE_SECONDS):
                response = await send()
        except TimeoutError:
            self.record.add(Answer(step, "timeout", started, time.monotonic()))
            return None
        except httpx.HTTPError as exc:
            self.record.add(Answer(step, f"connection {type(exc).__name__}", started,
                                   time.monotonic()))
            return None
        judged = (outcome(response) if outcome is not None and response.status_code != 503
                  else http_outcome(response, api=api))
        self.record.add(Answer(step, judged, started, time.monotonic(),
                               response.text[:160] if response.status_code >= 500 else ""))
        return response

    def _revoked_by_holder(self, access_token: str, chain: Chain | None) -> bool:
        return access_token in self._revoking or (chain is not None and chain.revoking)

    async def validate(self, step: str, access_token: str, chain: Chain | None = None,
                       ) -> token_pb2.ValidateTokenResponse | None:
        started = time.monotonic()
        try:
            result = await self._tokens.ValidateToken(
                token_pb2.ValidateTokenRequest(token=access_token, required_scopes=[SCOPE]),
                timeout=DEADLINE_SECONDS)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            outcome = "timeout" if code == grpc.StatusCode.DEADLINE_EXCEEDED else code.name
            self.record.add(Answer(step, outcome, started, time.monotonic(),
                                   exc.details() or ""))
            return None
        expected = REVOKED if step == "revoked_validate" else VALID
        outcome = "ok" if result.reason == expected else (
            "active!" if result.active else token_pb2.ValidationReason.Name(result.reason))
        if result.reason == REVOKED and self._revoked_by_holder(access_token, chain):
            outcome = "ok"  # revoked by its own holder meanwhile
        self.record.add(Answer(step, outcome, started, time.monotonic()))
        return result

    def _token_post(self, path: str, form: dict[str, str],
                    app: RegisteredApp | None = None) -> Callable[[], Awaitable[httpx.Response]]:
        app = app or self.app
        return lambda: self.browser.post(path, data=form,
                                         auth=(app.client_id, app.client_secret))

    # -- the steps ----------------------------------------------------------------------------
    def authorization_url(self) -> str:
        return "/oauth/authorize?" + urlencode({
            "client_id": self.app.client_id, "redirect_uri": CALLBACK,
            "response_type": "code", "scope": SCOPE, "state": "load"})

    def _where(self, response: httpx.Response) -> str:
        location: str = response.headers.get("location", "")
        return urljoin(str(response.url), location)

    def _authorize_outcome(self, response: httpx.Response) -> str:
        if response.status_code in _REDIRECTS:
            location = self._where(response)
            if location.startswith(CALLBACK + "?code="):
                return "ok"
            if urljoin(self._gateway, "/login?") in location:
                return "login"
            return f"{response.status_code} to {location[:80]}"
        return http_outcome(response, api=False)

    def _sign_in_outcome(self, response: httpx.Response) -> str:
        if response.status_code in _REDIRECTS:
            return "ok"
        if response.status_code == 200 and ('name="password"' in response.text
                                            or 'name="decision"' in response.text):
            return "ok"
        return http_outcome(response, api=False) if response.status_code != 200 else (
            "unexpected page")

    async def authorize(self) -> str | None:
        """A code, signing in again first when the session is gone."""
        response = await self._http("authorize", lambda: self.browser.get(
            self.authorization_url()), api=False, outcome=self._authorize_outcome)
        if response is None or response.status_code not in _REDIRECTS:
            return None
        location = self._where(response)
        if location.startswith(CALLBACK + "?"):
            return callback_params(location).get("code")
        if "/login?" not in location:
            return None
        return await self._sign_in(location)

    async def _sign_in(self, login_url: str) -> str | None:
        """The login form (and the consent screen, should it come): one ``sign_in`` answer
        per request on the way."""
        response = await self._http("sign_in", lambda: self.browser.get(login_url), api=False,
                                    outcome=self._sign_in_outcome)
        for _ in range(6):
            if response is None or response.status_code >= 400:
                return None
            if response.status_code in _REDIRECTS:
                target = self._where(response)
                if target.startswith(CALLBACK + "?"):
                    return callback_params(target).get("code")
                response = await self._http("sign_in", functools.partial(self.browser.get, target),
                                            api=False, outcome=self._sign_in_outcome)
                continue
            page = response.text
            fields = hidden_inputs(page)
            if 'name="password"' in page:
                form = {**fields, "email": self._person.email,
                        "password": self._person.password}
                path = "/login"
            elif 'name="decision"' in page:
                form = {**fields, "decision": "approve"}
                path = "/oauth/authorize/decision"
            else:
                return None
            response = await self._http(
                "sign_in", functools.partial(self.browser.post, path, data=form), api=False,
                outcome=self._sign_in_outcome)
        return None

    async def exchange(self, code: str) -> Chain | None:
        """Sends the code until it is answered other than 503 (a client retrying a lost or
        refused exchange); ``invalid_grant`` after a 503 means the fault cost the code."""
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK}
        refused_before = False

        def judged(response: httpx.Response) -> str:
            outcome = http_outcome(response, api=True)
            return f"{outcome} after 503" if refused_before and outcome != "ok" else outcome

        given_up = time.monotonic() + GIVE_UP_SECONDS
        while time.monotonic() < given_up:
            response = await self._http("exchange", self._token_post("/oauth/token", form),
                                        api=True, outcome=judged)
            if response is not None and response.status_code == 200:
                self.record.exchanged[code] += 1
                body = response.json()
                return Chain(self.app, body["access_token"], body["refresh_token"])
            if response is not None and response.status_code == 503:
                refused_before = True
                await asyncio.sleep(RETRY_SECONDS)
                continue
            return None
        return None

    async def refresh(self, chain: Chain) -> bool:
        """Sends the newest refresh token until it is answered other than 503."""
        given_up = time.monotonic() + GIVE_UP_SECONDS
        while time.monotonic() < given_up:
            response = await self._http("refresh", self._token_post("/oauth/token", {
                "grant_type": "refresh_token", "refresh_token": chain.refresh_token},
                chain.app), api=True)
            if response is not None and response.status_code == 200:
                body = response.json()
                chain.access_token, chain.refresh_token = (body["access_token"],
                                                           body["refresh_token"])
                return True
            if response is None or response.status_code == 503:
                await asyncio.sleep(RETRY_SECONDS)
                continue
            return False
        return False

    async def call_api(self, access_token: str, step: str = "bookings",
                       chain: Chain | None = None) -> None:
        def refused(response: httpx.Response) -> str:
            # Refused is what is expected of a revoked token; served is the failure.
            return {401: "ok", 200: "served!"}.get(response.status_code,
                                                   http_outcome(response, api=True))

        def served(response: httpx.Response) -> str:
            if response.status_code == 401 and self._revoked_by_holder(access_token, chain):
                return "ok"  # revoked by its own holder meanwhile
            return http_outcome(response, api=True)

        await self._http(step, lambda: self._bookings.get(
            "/v1/bookings", headers={"Authorization": f"Bearer {access_token}"}), api=True,
            outcome=refused if step == "revoked_bookings" else served)

    async def introspect(self, chain: Chain) -> None:
        token = chain.access_token

        def active(response: httpx.Response) -> str:
            outcome = http_outcome(response, api=True)
            if outcome == "ok" and not response.json().get("active"):
                return "ok" if self._revoked_by_holder(token, chain) else "inactive"
            return outcome

        await self._http("introspect", self._token_post(
            "/oauth/introspect", {"token": token}, chain.app), api=True, outcome=active)

    async def jwks(self) -> None:
        await self._http("jwks", lambda: self.browser.get("/.well-known/jwks.json"), api=True)

    async def revoke(self, chain: Chain, *, whole_grant: bool) -> bool:
        """Revokes the refresh token (the whole grant) or the access token alone; sent again
        after a 503 until answered."""
        token = chain.refresh_token if whole_grant else chain.access_token
        if whole_grant:
            chain.revoking = True
        else:
            self._revoking.add(token)
        given_up = time.monotonic() + GIVE_UP_SECONDS
        while time.monotonic() < given_up:
            response = await self._http("revoke", self._token_post(
                "/oauth/revoke", {"token": token}, chain.app), api=True)
            if response is not None and response.status_code == 200:
                self.record.revoked.append(Revoked(
                    chain.app, chain.access_token,
                    chain.refresh_token if whole_grant else None))
                return True
            if response is None or response.status_code == 503:
                await asyncio.sleep(RETRY_SECONDS)
                continue
            return False
        return False

    async def double_exchange(self, code: str) -> None:
        """The same code sent twice at once (two tabs, or a thief racing the app): at most one
        answer may carry tokens."""
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK}
        def either(response: httpx.Response) -> str:
            outcome = http_outcome(response, api=True)
            return "ok" if outcome == "400 invalid_grant" else outcome

        answers = await asyncio.gather(*(
            self._http("double_exchange", self._token_post("/oauth/token", form), api=True,
                       outcome=either) for _ in range(2)))
        self.record.exchanged[code] += sum(1 for response in answers
                                           if response is not None
                                           and response.status_code == 200)

    async def probe_revoked(self) -> None:
        if not self.record.revoked:
            return
        revoked = self._random.choice(self.record.revoked)
        await self.validate("revoked_validate", revoked.access_token)
        await self.call_api(revoked.access_token, step="revoked_bookings")

    # -- the loops ----------------------------------------------------------------------------
    def _adopt(self, chain: Chain) -> None:
        self.chains.append(chain)
        while len(self.chains) > LIVE_GRANTS:
            self.record.chains.append(self.chains.pop(0))

    async def authorizations(self, stop: asyncio.Event) -> None:
        rounds = 0
        while not stop.is_set():
            rounds += 1
            code = await self.authorize()
            if code is not None and rounds % 5 == 0:
                await self.double_exchange(code)
            elif code is not None:
                chain = await self.exchange(code)
                if chain is not None:
                    self._adopt(chain)
            await asyncio.sleep(AUTHORIZE_PAUSE_SECONDS)

    async def refreshes(self, stop: asyncio.Event) -> None:
        rounds = 0
        while not stop.is_set():
            if self.chains:
                rounds += 1
                chain = self._random.choice(self.chains)
                if rounds % 10 == 0:
                    self.chains.remove(chain)
                    await self.revoke(chain, whole_grant=True)
                elif rounds % 7 == 0:
                    # The grant lives on: its next access token works.
                    if not (await self.revoke(chain, whole_grant=False)
                            and await self.refresh(chain)):
                        self.chains.remove(chain)
                elif not await self.refresh(chain):
                    self.chains.remove(chain)
                elif rounds % 4 == 0:
                    await self.introspect(chain)
            await asyncio.sleep(REFRESH_PAUSE_SECONDS)

    async def api_calls(self, stop: asyncio.Event) -> None:
        rounds = 0
        while not stop.is_set():
            rounds += 1
            if self.chains:
                chain = self._random.choice(self.chains)
                token = chain.access_token
                await self.validate("validate", token, chain)
                await self.call_api(token, chain=chain)
            if rounds % 5 == 0:
                await self.jwks()
            if rounds % 3 == 0:
                await self.probe_revoked()
            await asyncio.sleep(API_PAUSE_SECONDS)

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(self.authorizations(stop), self.refreshes(stop),
                             self.api_calls(stop))


async def new_client(*, gateway: str, registry_grpc: str, bookings: httpx.AsyncClient,
                     pool: asyncpg.Pool, tokens: token_pb2_grpc.TokenServiceAsyncStub,
                     record: Record, seed: int) -> LoadClient:
    """A new person and app, signed in and consented once (the code is left unused)."""
    app = await register_app(registry_grpc, redirect_uri=CALLBACK, scopes=SCOPE,
                             name=f"Fault load {seed}")
    person = await new_person(pool)
    client = LoadClient(gateway=gateway, bookings=bookings, app=app, person=person,
                        tokens=tokens, record=record, seed=seed)
    code = await client.authorize()
    assert code is not None, record.answers[-5:]
    return client


class Load:
    """Clients looping until :meth:`stop`."""

    def __init__(self, clients: list[LoadClient], record: Record) -> None:
        self.clients = clients
        self.record = record
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

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

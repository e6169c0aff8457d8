"""Any replica answers any request (DESIGN §9): sessions, pending authorizations, consents, codes,
refresh rotation, revocation and signing keys live in the stores, so what one replica wrote the
other honours at once (keys: within ``OTESSE_TOKEN_KEY_REFRESH_SECONDS``).

Each request here is sent to one chosen replica, on its own port — what the gateway forwards to
it, with the cookies the browser holds — so the test knows which replica served what.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
from typing import Any
from urllib.parse import urlencode

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
from tests.integration.stack import OTESSE_AUTH, ROOT
from tests.replicas.cluster import KEY_REFRESH_SECONDS, Cluster, environment_for_cli

CALLBACK = "http://127.0.0.1:8765/callback"
SCOPE = "bookings:read"
VALID = token_pb2.VALIDATION_REASON_VALID
REVOKED = token_pb2.VALIDATION_REASON_REVOKED


class PinnedBrowser:
    """A person's browser whose every request goes to a chosen replica (``authorize`` 0 or 1,
    ``token`` 0 or 1). Cookies do not depend on the port, so the session follows it."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.http = httpx.AsyncClient(timeout=10.0)

    def url(self, service: str, index: int, path: str) -> str:
        return self.cluster.of(service)[index].admin_url + path

    async def page(self, path: str, *, authorize: int) -> tuple[str, httpx.Response]:
        """Follows redirects within the service; the page, or the URL of the first redirect
        that leaves it (the app's callback), and the last answer."""
        response = await self.http.get(self.url("authorize", authorize, path))
        while response.status_code in (302, 303):
            location = response.headers["location"]
            if not location.startswith("/"):
                return location, response
            response = await self.http.get(self.url("authorize", authorize, location))
        assert response.status_code == 200, response.text[:300]
        return response.text, response

    async def form(self, path: str, data: dict[str, str], *, authorize: int) -> httpx.Response:
        return await self.http.post(self.url("authorize", authorize, path), data=data)

    async def token(self, app: RegisteredApp, form: dict[str, str], *, index: int,
                    endpoint: str = "/oauth/token") -> httpx.Response:
        return await self.http.post(self.url("token", index, endpoint), data=form,
                                    auth=(app.client_id, app.client_secret))


def authorization_path(app: RegisteredApp) -> str:
    return "/oauth/authorize?" + urlencode({
        "client_id": app.client_id, "redirect_uri": CALLBACK, "response_type": "code",
        "scope": SCOPE, "state": "replicas"})


async def validate_at(address: str, token: str) -> token_pb2.ValidateTokenResponse:
    """``ValidateToken`` on one replica alone (a channel to its address only)."""
    async with grpc.aio.insecure_channel(address) as channel:
        return await token_pb2_grpc.TokenServiceStub(channel).ValidateToken(
            token_pb2.ValidateTokenRequest(token=token), timeout=5)


async def signed_in(cluster: Cluster, pool: asyncpg.Pool,
                    ) -> tuple[PinnedBrowser, Person, RegisteredApp]:
    app = await register_app(cluster.registry_grpc, redirect_uri=CALLBACK, scopes=SCOPE)
    person = await new_person(pool)
    return PinnedBrowser(cluster), person, app


async def first_tokens(client: PinnedBrowser, person: Person, app: RegisteredApp,
                       ) -> dict[str, Any]:
    """Sign-in and consent on authorize-0, the exchange on token-0."""
    login, _ = await client.page(authorization_path(app), authorize=0)
    answer = await client.form("/login", {**hidden_inputs(login), "email": person.email,
                                          "password": person.password}, authorize=0)
    consent, _ = await client.page(answer.headers["location"], authorize=0)
    decided = await client.form("/oauth/authorize/decision",
                                {**hidden_inputs(consent), "decision": "approve"}, authorize=0)
    code = callback_params(decided.headers["location"])["code"]
    exchanged = await client.token(app, {"grant_type": "authorization_code", "code": code,
                                         "redirect_uri": CALLBACK}, index=0)
    assert exchanged.status_code == 200, exchanged.text
    tokens: dict[str, Any] = exchanged.json()
    return tokens


async def test_a_session_pending_request_consent_and_code_cross_replicas(
        cluster: Cluster, pool: asyncpg.Pool) -> None:
    client, person, app = await signed_in(cluster, pool)
    try:
        # Signed in on authorize-0 ...
        login, _ = await client.page(authorization_path(app), authorize=0)
        assert 'name="password"' in login
        answer = await client.form("/login", {**hidden_inputs(login), "email": person.email,
                                              "password": person.password}, authorize=0)
        assert answer.status_code in (302, 303)
        # ... the session and the pending authorization are honoured by authorize-1, which
        # shows the consent screen rather than the login form.
        consent, _ = await client.page(answer.headers["location"], authorize=1)
        assert 'name="decision"' in consent and 'name="password"' not in consent
        # Approved on authorize-0 with the form authorize-1 rendered (its CSRF token).
        decided = await client.form("/oauth/authorize/decision",
                                    {**hidden_inputs(consent), "decision": "approve"},
                                    authorize=0)
        assert decided.status_code in (302, 303)
        code = callback_params(decided.headers["location"])["code"]
        # A code minted by authorize-0 is exchanged by token-1, and only once: token-0 refuses
        # the replay (and revokes what the first exchange issued).
        exchange = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK}
        first = await client.token(app, exchange, index=1)
        assert first.status_code == 200, first.text
        replay = await client.token(app, exchange, index=0)
        assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
        replica_0, replica_1 = cluster.of("token")
        assert (await validate_at(replica_0.grpc_address,
                                  first.json()["access_token"])).reason == REVOKED
        # The consent given through authorize-0 is remembered by authorize-1: straight back
        # to the app with a code, which token-0 exchanges.
        callback, _ = await client.page(authorization_path(app), authorize=1)
        assert callback.startswith(CALLBACK + "?")
        again = await client.token(app, {**exchange, "code": callback_params(callback)["code"]},
                                   index=0)
        assert again.status_code == 200, again.text
        assert (await validate_at(replica_1.grpc_address,
                                  again.json()["access_token"])).reason == VALID
    finally:
        await client.http.aclose()


async def test_refresh_rotation_its_retry_window_and_reuse_detection_cross_replicas(
        cluster: Cluster, pool: asyncpg.Pool) -> None:
    client, person, app = await signed_in(cluster, pool)
    try:
        tokens = await first_tokens(client, person, app)
        refresh_0 = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
        rotated = await client.token(app, refresh_0, index=0)
        assert rotated.status_code == 200
        # The answer from token-0 was "lost": the client sends the same refresh token again
        # and token-1 answers with the very same pair (sealed in Postgres), minting nothing.
        retried = await client.token(app, refresh_0, index=1)
        assert retried.status_code == 200
        assert retried.json()["refresh_token"] == rotated.json()["refresh_token"]
        assert retried.json()["access_token"] == rotated.json()["access_token"]
        # The successor is used on token-1; the old token shown again on token-0 is theft: the
        # grant is revoked, and token-1 refuses its latest refresh token too.
        following = await client.token(app, {"grant_type": "refresh_token",
                                             "refresh_token": rotated.json()["refresh_token"]},
                                       index=1)
        assert following.status_code == 200
        reused = await client.token(app, refresh_0, index=0)
        assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
        latest = await client.token(app, {"grant_type": "refresh_token",
                                          "refresh_token": following.json()["refresh_token"]},
                                    index=1)
        assert latest.status_code == 400 and latest.json()["error"] == "invalid_grant"
        for replica in cluster.of("token"):
            assert (await validate_at(replica.grpc_address,
                                      following.json()["access_token"])).reason == REVOKED
    finally:
        await client.http.aclose()


async def test_a_revocation_on_one_token_replica_is_refused_by_the_other(
        cluster: Cluster, pool: asyncpg.Pool) -> None:
    client, person, app = await signed_in(cluster, pool)
    try:
        tokens = await first_tokens(client, person, app)
        replica_0, replica_1 = cluster.of("token")
        assert (await validate_at(replica_1.grpc_address,
                                  tokens["access_token"])).reason == VALID
        revoked = await client.token(app, {"token": tokens["refresh_token"]}, index=0,
                                     endpoint="/oauth/revoke")
        assert revoked.status_code == 200
        # At once, on the other replica: gRPC, introspection, refresh and the API.
        assert (await validate_at(replica_1.grpc_address,
                                  tokens["access_token"])).reason == REVOKED
        introspected = await client.token(app, {"token": tokens["access_token"]}, index=1,
                                          endpoint="/oauth/introspect")
        assert introspected.status_code == 200 and introspected.json() == {"active": False}
        refreshed = await client.token(app, {"grant_type": "refresh_token",
                                             "refresh_token": tokens["refresh_token"]}, index=1)
        assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"
        async with httpx.AsyncClient(base_url=cluster.bookings_url) as api:
            answer = await api.get("/v1/bookings", headers={
                "Authorization": f"Bearer {tokens['access_token']}"})
        assert answer.status_code == 401 and answer.json()["error"] == "invalid_token"
    finally:
        await client.http.aclose()


def _kid(access_token: str) -> str:
    header = access_token.removeprefix("otesse_at_").split(".")[0]
    kid: str = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]
    return kid


async def test_a_rotated_signing_key_is_served_and_honoured_by_every_replica(
        cluster: Cluster, pool: asyncpg.Pool) -> None:
    client, person, app = await signed_in(cluster, pool)
    replicas = cluster.of("token")
    try:
        before = await first_tokens(client, person, app)
        rotated = await asyncio.to_thread(
            subprocess.run, [str(OTESSE_AUTH), "keys", "rotate", "--force", "--json"],
            env=environment_for_cli(cluster), cwd=ROOT, capture_output=True, text=True,
            check=True)
        rotated_at = time.monotonic()
        # Earlier rotations (other tests share the database) leave more previous keys: every
        # key listed is published, the one that signed `before` among the previous ones.
        listed = json.loads(rotated.stdout)
        current = next(key["kid"] for key in listed if key["state"] == "current")
        published = {key["kid"] for key in listed}
        assert _kid(before["access_token"]) in {
            key["kid"] for key in listed if key["state"] == "previous"}
        # Each replica signs with the new current key, and serves next, current and previous
        # in its JWKS, within the refresh interval (plus a margin for a busy machine).
        latest = before["refresh_token"]
        signed: dict[int, str] = {}
        async with httpx.AsyncClient(timeout=5) as http:
            for index, replica in enumerate(replicas):
                while True:
                    answer = await client.token(app, {"grant_type": "refresh_token",
                                                      "refresh_token": latest}, index=index)
                    assert answer.status_code == 200, answer.text
                    latest = answer.json()["refresh_token"]
                    jwks = (await http.get(replica.admin_url + "/.well-known/jwks.json")).json()
                    served = {key["kid"] for key in jwks["keys"]}
                    if _kid(answer.json()["access_token"]) == current and served == published:
                        signed[index] = answer.json()["access_token"]
                        break
                    assert time.monotonic() - rotated_at < KEY_REFRESH_SECONDS + 5, (
                        f"{replica.name} still signs with the old key")
                    await asyncio.sleep(0.1)
        took = time.monotonic() - rotated_at
        print(f"both token replicas signed with the rotated key {took:.2f} s after the "
              f"rotation (OTESSE_TOKEN_KEY_REFRESH_SECONDS={KEY_REFRESH_SECONDS})")
        # A token each replica signed with the new key, and one signed before with the old
        # (still published as previous), are valid on both replicas.
        for replica in replicas:
            for token in (*signed.values(), before["access_token"]):
                assert (await validate_at(replica.grpc_address, token)).reason == VALID
    finally:
        await client.http.aclose()

"""The token service's audit events, each caused by the real path that causes it: tokens issued
by an exchange and by a refresh, a reused refresh token and a replayed code (and the grants they
revoke), revocation by the client (RFC 7009), by a user through the authorize service and by an
operator, and a signing key rotated. Each with its actor, user, client, grant, the client's
address (through the trusted gateway) and the request id — and written by the statement that
makes the change: an exchange and a refresh send no more statements than before, a change that
fails leaves no event, and an event that fails leaves no change."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import asyncpg
import grpc
import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from otesse.auth.v1 import token_pb2, token_pb2_grpc
from services.common import audit, credentials
from services.common.audit import NOWHERE, Actor, Origin
from services.common.grpc_client import create_channel
from services.common.redis_lean import LeanRedis
from services.common.settings import StoreSettings
from services.token.access_tokens import AccessTokenIssuer
from services.token.grants.refresh_token import RefreshTokenGrant
from services.token.keys import KeyRing, PgKeyStore
from services.token.store import AuthorizationRevoked, CodeAlreadyExchanged, PgGrantStore, RevokedBy
from tests.audit_rows import events, of_grant, of_request
from tests.callers import as_service
from tests.token.conftest import (
    KEK,
    REDIRECT_URI,
    SCOPES,
    Client,
    TokenService,
    client_fields,
    issue_code,
    make_settings,
    running,
)
from tests.token.test_authorization_code import CountingPool, authenticated, grant_over
from tests.token.test_purge import cli

USER_IP = "203.0.113.77"


def fresh_request_id() -> str:
    return "audit-" + secrets.token_hex(8)


async def post_token(http: httpx.AsyncClient, client: Client, body: dict[str, str], *,
                     request_id: str, ip: str = USER_IP) -> httpx.Response:
    return await http.post("/oauth/token", json={**body, **client_fields(client)},
                           headers={"X-Request-ID": request_id, "X-Forwarded-For": ip})


async def exchanged(token: TokenService, redis: aioredis.Redis, prefix: str, client: Client,
                    *, request_id: str, user_id: str | None = None) -> dict[str, Any]:
    code = await issue_code(redis, prefix, client, user_id=user_id)
    response = await post_token(token.http, client, {
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI},
        request_id=request_id)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    body["code"] = code
    return body


async def grant_of(pool: asyncpg.Pool, refresh_token: str) -> str:
    grant_id = await pool.fetchval(
        "SELECT grant_id::text FROM token.refresh_tokens WHERE token_hash = $1",
        credentials.sha256(refresh_token))
    assert grant_id is not None
    return cast(str, grant_id)


def shape(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["event_type"], row["actor_kind"], row["actor_id"], row["client_ip"],
            json.loads(row["details"]))


def sorted_shapes(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted((shape(row) for row in rows), key=lambda item: item[0])


async def test_an_exchange_records_the_tokens_issued_by_the_client(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool) -> None:
    user_id = f"user-{secrets.token_hex(4)}"
    rid = fresh_request_id()
    body = await exchanged(token, redis, redis_prefix, client, request_id=rid, user_id=user_id)
    grant_id = await grant_of(pool, body["refresh_token"])

    (row,) = await of_grant(pool, grant_id)

    assert shape(row) == ("token.issued", "client", client.client_id, USER_IP, {
        "grant_type": "authorization_code", "scope": " ".join(SCOPES)})
    assert (row["subject_user_id"], row["client_id"], row["request_id"]) == (
        user_id, client.client_id, rid)


async def test_a_refresh_records_the_tokens_issued_with_the_scope_granted(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool) -> None:
    body = await exchanged(token, redis, redis_prefix, client, request_id=fresh_request_id())
    rid = fresh_request_id()
    response = await post_token(token.http, client, {
        "grant_type": "refresh_token", "refresh_token": body["refresh_token"],
        "scope": "bookings:read"}, request_id=rid, ip="198.51.100.4")
    assert response.status_code == 200

    (row,) = await of_request(pool, rid)

    assert shape(row) == ("token.issued", "client", client.client_id, "198.51.100.4", {
        "grant_type": "refresh_token", "scope": "bookings:read"})
    assert row["grant_id"] == await grant_of(pool, body["refresh_token"])


async def test_the_retry_window_mints_nothing_and_records_nothing(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool) -> None:
    body = await exchanged(token, redis, redis_prefix, client, request_id=fresh_request_id())
    refresh_body = {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}
    first, again = fresh_request_id(), fresh_request_id()
    assert (await post_token(token.http, client, refresh_body, request_id=first)).is_success
    assert (await post_token(token.http, client, refresh_body, request_id=again)).is_success
    assert len(await of_request(pool, first)) == 1
    assert await of_request(pool, again) == []


async def test_refresh_token_reuse_records_the_theft_and_the_revocation_together(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool) -> None:
    body = await exchanged(token, redis, redis_prefix, client, request_id=fresh_request_id())
    old = {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}
    renewed = await post_token(token.http, client, old, request_id=fresh_request_id())
    # Its successor used too: the old token's return is no retry, but theft.
    assert (await post_token(token.http, client, {
        "grant_type": "refresh_token", "refresh_token": renewed.json()["refresh_token"]},
        request_id=fresh_request_id())).is_success
    rid = fresh_request_id()
    reused = await post_token(token.http, client, old, request_id=rid, ip="192.0.2.66")
    assert reused.json()["error"] == "invalid_grant"

    rows = await of_request(pool, rid)

    # Two events of one statement (in no particular order of their own).
    assert sorted_shapes(rows) == [
        ("grant.revoked", "system", "system", "192.0.2.66", {"reason": "refresh_token_reuse"}),
        ("refresh_token.reused", "client", client.client_id, "192.0.2.66", {}),
    ]
    grant_id = await grant_of(pool, body["refresh_token"])
    assert {row["grant_id"] for row in rows} == {grant_id}
    assert len({row["occurred_at"] for row in rows}) == 1  # one transaction


async def test_a_replayed_code_records_the_replay_and_the_revocation_together(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool) -> None:
    body = await exchanged(token, redis, redis_prefix, client, request_id=fresh_request_id())
    rid = fresh_request_id()
    replay = await post_token(token.http, client, {
        "grant_type": "authorization_code", "code": body["code"],
        "redirect_uri": REDIRECT_URI}, request_id=rid, ip="192.0.2.99")
    assert replay.json()["error"] == "invalid_grant"

    rows = await of_request(pool, rid)

    grant_id = await grant_of(pool, body["refresh_token"])
    assert sorted_shapes(rows) == [
        ("code.replayed", "client", client.client_id, "192.0.2.99", {}),
        ("grant.revoked", "system", "system", "192.0.2.99", {"reason": "code_replay"}),
    ]
    assert {row["grant_id"] for row in rows} == {grant_id}


async def test_a_replay_before_the_exchange_commits_records_the_replay_alone(
        token: TokenService, pool: asyncpg.Pool) -> None:
    store = PgGrantStore(pool, access_token_ttl=3600)
    rid = fresh_request_id()
    code_hash = credentials.sha256(credentials.new_authorization_code())
    await store.revoke_replayed_code(code_hash=code_hash, presented_by="otesse_ci_someone",
                                     origin=Origin(ip="192.0.2.5", request_id=rid))
    (row,) = await of_request(pool, rid)
    assert shape(row) == ("code.replayed", "client", "otesse_ci_someone", "192.0.2.5", {})
    assert (row["grant_id"], row["subject_user_id"]) == (None, None)


async def revoke_over_http(token: TokenService, client: Client, value: str, *,
                           request_id: str) -> httpx.Response:
    return await token.http.post("/oauth/revoke", data={"token": value,
                                                        **client_fields(client)},
                                 headers={"X-Request-ID": request_id,
                                          "X-Forwarded-For": USER_IP})


async def test_rfc7009_revocation_is_recorded_as_the_clients(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool) -> None:
    body = await exchanged(token, redis, redis_prefix, client, request_id=fresh_request_id())
    grant_id = await grant_of(pool, body["refresh_token"])
    access, refresh_ = fresh_request_id(), fresh_request_id()
    for value, rid in ((body["access_token"], access), (body["refresh_token"], refresh_)):
        assert (await revoke_over_http(token, client, value, request_id=rid)).status_code == 200
    # Revoking again changes nothing, so records nothing.
    again = fresh_request_id()
    assert (await revoke_over_http(token, client, body["refresh_token"],
                                   request_id=again)).status_code == 200

    (one_token,) = await of_request(pool, access)
    (whole_grant,) = await of_request(pool, refresh_)
    assert shape(one_token) == ("access_token.revoked", "client", client.client_id, USER_IP, {})
    assert shape(whole_grant) == ("grant.revoked", "client", client.client_id, USER_IP,
                                  {"reason": "client_revoked_token"})
    assert one_token["grant_id"] == whole_grant["grant_id"] == grant_id
    assert one_token["subject_user_id"] == whole_grant["subject_user_id"] is not None
    assert await of_request(pool, again) == []


@pytest_asyncio.fixture
async def as_cli(token: TokenService) -> AsyncIterator[token_pb2_grpc.TokenServiceAsyncStub]:
    channel = create_channel(f"127.0.0.1:{token.grpc_port}",
                             services=("otesse.auth.v1.TokenService",),
                             interceptors=as_service("cli", "token"))
    yield token_pb2_grpc.TokenServiceStub(channel)
    await channel.close()


def rpc_metadata(request_id: str, **extra: str) -> tuple[tuple[str, str], ...]:
    return (("x-request-id", request_id), *extra.items())


async def test_a_user_revoking_an_app_through_the_authorize_service_is_the_actor(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool) -> None:
    user_id = f"user-{secrets.token_hex(4)}"
    body = await exchanged(token, redis, redis_prefix, client, request_id=fresh_request_id(),
                           user_id=user_id)
    rid = fresh_request_id()
    # token.grpc is the authorize service's channel (tests/token/conftest.py).
    await token.grpc.RevokeGrant(
        token_pb2.RevokeGrantRequest(user_id=user_id, client_id=client.client_id),
        metadata=rpc_metadata(rid) + audit.on_behalf(user_id, Origin(ip=USER_IP)))

    (row,) = await of_request(pool, rid)
    assert shape(row) == ("grant.revoked", "user", user_id, USER_IP,
                          {"reason": "user_revoked_app"})
    assert row["grant_id"] == await grant_of(pool, body["refresh_token"])


# Who the token service believes is behind a RevokeGrant call, whatever the call claims.
ACTORS = [
    ("the authorize service acting for a user is that user",
     "authorize", {"x-otesse-on-behalf-of": "alice", "x-otesse-client-ip": "198.51.100.1"},
     ("user", "alice", "198.51.100.1")),
    ("the authorize service for nobody is the system",
     "authorize", {}, ("system", "system", None)),
    ("the operator CLI is the operator, at its own address",
     "cli", {}, ("operator", "operator", "127.0.0.1")),
    ("fails because the CLI cannot pass itself off as a user",
     "cli", {"x-otesse-on-behalf-of": "victim", "x-otesse-client-ip": "198.51.100.1"},
     ("operator", "operator", "127.0.0.1")),
    ("a user id longer than any is not believed",
     "authorize", {"x-otesse-on-behalf-of": "u" * 129}, ("system", "system", None)),
    ("an address that is not one is dropped",
     "authorize", {"x-otesse-on-behalf-of": "alice", "x-otesse-client-ip": "not-an-ip"},
     ("user", "alice", None)),
]


@pytest.mark.parametrize(("caller", "claims", "recorded"), [case[1:] for case in ACTORS],
                         ids=[case[0] for case in ACTORS])
async def test_the_actor_of_a_revocation_is_the_proven_caller(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool, caller: str, claims: dict[str, str],
        recorded: tuple[str, str, str | None]) -> None:
    body = await exchanged(token, redis, redis_prefix, client, request_id=fresh_request_id())
    grant_id = await grant_of(pool, body["refresh_token"])
    channel = create_channel(f"127.0.0.1:{token.grpc_port}",
                             services=("otesse.auth.v1.TokenService",),
                             interceptors=as_service(caller, "token"))
    rid = fresh_request_id()
    try:
        await token_pb2_grpc.TokenServiceStub(channel).RevokeGrant(
            token_pb2.RevokeGrantRequest(grant_id=grant_id),
            metadata=rpc_metadata(rid, **claims))
    finally:
        await channel.close()

    (row,) = await of_request(pool, rid)
    assert (row["actor_kind"], row["actor_id"], row["client_ip"]) == recorded
    assert row["grant_id"] == grant_id


async def test_a_resource_server_cannot_revoke_so_cannot_forge_an_event(
        token: TokenService, pool: asyncpg.Pool) -> None:
    channel = create_channel(f"127.0.0.1:{token.grpc_port}",
                             services=("otesse.auth.v1.TokenService",),
                             interceptors=as_service("bookings", "token"))
    rid = fresh_request_id()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await token_pb2_grpc.TokenServiceStub(channel).RevokeGrant(
                token_pb2.RevokeGrantRequest(user_id="victim"),
                metadata=rpc_metadata(rid, **{"x-otesse-on-behalf-of": "victim"}))
    finally:
        await channel.close()
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await of_request(pool, rid) == []


async def test_an_address_behind_an_untrusted_peer_is_the_peer(
        store_settings: StoreSettings, registry_address: str, redis: aioredis.Redis,
        redis_prefix: str, client: Client, pool: asyncpg.Pool) -> None:
    """X-Forwarded-For is believed from the gateway only: from anyone else it is forged."""
    settings = make_settings(store_settings, registry_address, trusted_proxies=())
    async with running(settings) as untrusting:
        rid = fresh_request_id()
        await exchanged(untrusting, redis, redis_prefix, client, request_id=rid)
    (row,) = await of_request(pool, rid)
    assert row["client_ip"] == "127.0.0.1"


# --- One statement: the event is part of the change -----------------------------------------


async def test_an_exchange_and_a_refresh_send_no_statement_more_than_before(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        lean_redis: LeanRedis,
        pool: asyncpg.Pool) -> None:
    counting = CountingPool(pool)
    store = PgGrantStore(cast(asyncpg.Pool, counting), access_token_ttl=3600)
    rid = fresh_request_id()
    origin = Origin(ip=USER_IP, request_id=rid)
    code = await issue_code(redis, redis_prefix, client)
    body = json.loads(await grant_over(token, lean_redis, redis_prefix, store).handle(
        {"code": code, "redirect_uri": REDIRECT_URI}, authenticated(client), origin))
    # The grant, its refresh token and its event: one statement.
    assert counting.statements == 1
    settings = token.settings
    refresh_grant = RefreshTokenGrant(
        store=store, access_tokens=AccessTokenIssuer(
            token.components.ring, issuer=settings.issuer, audience=settings.audience,
            ttl=settings.access_token_ttl),
        denylist=token.components.denylist, refresh_ttl=3600, retry_window=0)
    counting.statements = 0
    await refresh_grant.handle({"refresh_token": body["refresh_token"]},
                               authenticated(client), origin)
    # The rotation with its checks and its event: one statement (issue #13).
    assert counting.statements == 1
    rows = await of_request(pool, rid)
    assert [json.loads(row["details"])["grant_type"] for row in rows] == [
        "authorization_code", "refresh_token"]


async def test_a_grant_that_is_not_written_leaves_no_event(
        token: TokenService, pool: asyncpg.Pool) -> None:
    store = PgGrantStore(pool, access_token_ttl=3600)
    code_hash = credentials.sha256(credentials.new_authorization_code())
    origin = Origin(ip=USER_IP, request_id=fresh_request_id())

    def grant(**overrides: Any) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "grant_id": str(uuid.uuid4()), "user_id": "user-x",
            "client_id": "otesse_ci_x", "scopes": SCOPES, "code_hash": code_hash,
            "refresh_hash": credentials.sha256(secrets.token_hex(16)), "refresh_ttl": 3600,
            "code_issued_at": 0.0, "origin": origin}
        return {**fields, **overrides}

    first = grant()
    await store.create_grant(**first)
    # The same code again: the grant insert fails on its unique code hash.
    second = grant()
    with pytest.raises(CodeAlreadyExchanged):
        await store.create_grant(**second)
    # The user revoked the app after the code was issued: nothing is inserted.
    await pool.execute(
        "INSERT INTO token.authorization_revocations (user_id, client_id, revoked_at)"
        " VALUES ('user-y', 'otesse_ci_x', now())")
    third = grant(user_id="user-y", code_hash=credentials.sha256("another code"),
                  code_issued_at=1.0)
    with pytest.raises(AuthorizationRevoked):
        await store.create_grant(**third)

    assert len(await of_grant(pool, first["grant_id"])) == 1
    assert await of_grant(pool, second["grant_id"]) == []
    assert await of_grant(pool, third["grant_id"]) == []


@pytest_asyncio.fixture
async def failing_audit(pool: asyncpg.Pool) -> AsyncIterator[str]:
    """A request id whose audit events Postgres refuses (a trigger of this test's own), so
    the statements writing them fail as a full disk or a bad row would."""
    marker = fresh_request_id()
    name = f"refuse_{secrets.token_hex(4)}"
    await pool.execute(
        f"CREATE FUNCTION audit.{name}() RETURNS trigger LANGUAGE plpgsql AS $$"
        f" BEGIN IF NEW.request_id = '{marker}' THEN RAISE EXCEPTION 'refused by the test';"
        " END IF; RETURN NEW; END; $$;"
        f" CREATE TRIGGER {name} BEFORE INSERT ON audit.events"
        f" FOR EACH ROW EXECUTE FUNCTION audit.{name}()")
    try:
        yield marker
    finally:
        await pool.execute(f"DROP TRIGGER {name} ON audit.events;"
                           f" DROP FUNCTION audit.{name}()")


async def test_an_event_that_is_not_written_leaves_no_change(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool, failing_audit: str) -> None:
    store = PgGrantStore(pool, access_token_ttl=3600)
    failing = Origin(ip=USER_IP, request_id=failing_audit)
    grant_id = str(uuid.uuid4())
    refresh_hash = credentials.sha256(secrets.token_hex(16))
    with pytest.raises(asyncpg.RaiseError):
        await store.create_grant(
            grant_id=grant_id, user_id="user-z", client_id=client.client_id, scopes=SCOPES,
            code_hash=credentials.sha256(secrets.token_hex(16)), refresh_hash=refresh_hash,
            refresh_ttl=3600, code_issued_at=0.0, origin=failing)
    assert await pool.fetchval("SELECT count(*) FROM token.grants WHERE grant_id = $1::uuid",
                               grant_id) == 0
    assert await pool.fetchval("SELECT count(*) FROM token.refresh_tokens"
                               " WHERE token_hash = $1", refresh_hash) == 0

    # A live grant: its rotation and its revocation fail with their events, and change nothing.
    body = await exchanged(token, redis, redis_prefix, client, request_id=fresh_request_id())
    live = await grant_of(pool, body["refresh_token"])
    with pytest.raises(asyncpg.RaiseError):
        await store.rotate_refresh(token_hash=credentials.sha256(body["refresh_token"]),
                                   successor_hash=credentials.sha256(secrets.token_hex(16)),
                                   successor_sealed=None, refresh_ttl=3600,
                                   client_id=client.client_id, allowed_scopes=SCOPES,
                                   requested_scopes=None, origin=failing)
    with pytest.raises(asyncpg.RaiseError):
        await store.revoke_grants(grant_id=live, by=RevokedBy(
            actor=Actor.operator(), reason="operator", origin=failing))
    row = await pool.fetchrow(
        "SELECT r.rotated_at, g.revoked_at FROM token.refresh_tokens r JOIN token.grants g"
        " USING (grant_id) WHERE r.token_hash = $1", credentials.sha256(body["refresh_token"]))
    assert row is not None and (row["rotated_at"], row["revoked_at"]) == (None, None)
    assert (await post_token(token.http, client, {
        "grant_type": "refresh_token", "refresh_token": body["refresh_token"]},
        request_id=fresh_request_id())).status_code == 200


async def test_a_failed_event_is_a_server_error_without_detail(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool, failing_audit: str) -> None:
    code = await issue_code(redis, redis_prefix, client)
    response = await post_token(token.http, client, {
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI},
        request_id=failing_audit)
    assert (response.status_code, response.json()["error"]) == (500, "server_error")
    assert "refused" not in response.text
    assert await pool.fetchval("SELECT count(*) FROM token.grants WHERE code_hash = $1",
                               credentials.sha256(code)) == 0


# --- Signing keys and metrics ---------------------------------------------------------------


async def test_a_rotation_that_falls_due_is_recorded_as_the_systems(
        token: TokenService, pool: asyncpg.Pool) -> None:
    store = PgKeyStore(pool)
    ring = KeyRing(store, kek=base64.b64decode(KEK))
    await ring.refresh()
    before = ring.current().kid
    await asyncio.sleep(1.1)  # both the current and the next key are older than the period
    after = await events(pool, where="event_type = 'signing_key.rotated'")
    await ring.rotate_if_due(rotation_seconds=1, retire_after_seconds=3700)
    rows = [row for row in await events(pool, where="event_type = 'signing_key.rotated'")
            if row not in after]
    assert len(rows) == 1
    (row,) = rows
    details = json.loads(row["details"])
    assert (row["actor_kind"], row["actor_id"]) == ("system", "system")
    assert details["retired_kid"] == before and details["current_kid"] == ring.current().kid
    assert details["forced"] is False
    assert (row["client_ip"], row["request_id"], row["client_id"]) == (None, None, None)


async def test_an_operators_rotation_is_recorded_as_the_operators_with_its_request_id(
        token: TokenService, test_env: dict[str, str], pool: asyncpg.Pool) -> None:
    # Here, not in tests/cli: a rotation leaves one more published key behind, which the
    # replica tests (run before tests/token) must not find.
    after = await pool.fetchval("SELECT coalesce(max(event_id), 0) FROM audit.events")
    rotated = await asyncio.to_thread(cli, test_env, "keys", "rotate", "--force", "--json")
    assert rotated.returncode == 0, rotated.stderr
    current = next(key["kid"] for key in json.loads(rotated.stdout)
                   if key["state"] == "current")
    (row,) = await events(pool, where="event_id > $1 AND event_type = 'signing_key.rotated'",
                          args=[after])
    assert (row["actor_kind"], row["actor_id"]) == ("operator", "operator")
    details = json.loads(row["details"])
    assert (details["current_kid"], details["forced"]) == (current, True)
    assert row["request_id"] and len(row["request_id"]) == 32


async def test_every_event_written_is_counted_in_metrics(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client) -> None:
    async def issued() -> float:
        text = (await token.http.get("/metrics")).text
        for line in text.splitlines():
            if line.startswith('otesse_audit_events_total{type="token.issued"}'):
                return float(line.split()[-1])
        return 0.0

    before = await issued()
    await exchanged(token, redis, redis_prefix, client, request_id=fresh_request_id())
    assert await issued() == before + 1


async def test_the_details_vocabulary_keeps_secrets_out_even_by_mistake(
        token: TokenService, pool: asyncpg.Pool) -> None:
    store = PgGrantStore(pool, access_token_ttl=3600)
    with pytest.raises(ValueError, match="secret"):
        await store.revoke_grants(grant_id=str(uuid.uuid4()), by=RevokedBy(
            actor=Actor.client("otesse_ci_x"),
            reason=cast(Any, "otesse_rt_" + "a" * 43), origin=NOWHERE))

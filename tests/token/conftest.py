"""Fixtures of the token service's tests: the real service (HTTP on loopback + gRPC) over this
run's Postgres database and Redis key space, clients registered through the real registry, and
authorization codes written to Redis exactly as the authorize service writes them."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import httpx
import pytest_asyncio
import redis.asyncio as aioredis
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.timestamp_pb2 import Timestamp

from otesse.auth.v1 import registry_pb2, registry_pb2_grpc, token_pb2_grpc
from otesse.auth.v1.authorization_code_pb2 import AuthorizationCodeRecord
from services.common import credentials
from services.common.client_changes import ClientChangeFeed
from services.common.grpc_client import create_channel
from services.common.settings import Env, StoreSettings
from services.token import pkce
from services.token.app import TokenComponents, TokenRuntime, create_app
from services.token.keys import SigningKey, public_jwk, seal_private_key
from services.token.settings import DEV_KEK, TokenSettings
from tests.callers import as_service
from tests.servers import serve_app

# Every test process shares one database of signing keys, so every test that runs the token
# service uses the same KEK: the local-development default.
KEK = DEV_KEK
REDIRECT_URI = "https://app.example.com/callback"
ALL_SCOPES = ("bookings:read", "bookings:write", "customers:read", "customers:write")
SCOPES = ("bookings:read", "customers:read")


def make_settings(store_settings: StoreSettings, registry_address: str,
                  **overrides: Any) -> TokenSettings:
    base = TokenSettings.from_env(Env({"OTESSE_REGISTRY_ADDR": registry_address}))
    return replace(base, stores=store_settings, http_port=0, grpc_port=0,
                   key_rotation_seconds=0, **overrides)


@dataclass(frozen=True)
class TokenService:
    http: httpx.AsyncClient
    grpc: token_pb2_grpc.TokenServiceAsyncStub
    components: TokenComponents
    settings: TokenSettings
    base_url: str
    grpc_port: int
    client_changes: ClientChangeFeed


@asynccontextmanager
async def running(settings: TokenSettings) -> AsyncIterator[TokenService]:
    """The token app under uvicorn (its lifespan starts the gRPC server), plus clients."""
    app = create_app(settings)
    async with serve_app(app) as base_url:
        runtime: TokenRuntime = app.state.runtime
        # The authorize service's identity: tests list and revoke grants as it does.
        channel = create_channel(f"127.0.0.1:{runtime.grpc_port}",
                                 services=("otesse.auth.v1.TokenService",),
                                 interceptors=as_service("authorize", "token"))
        try:
            async with httpx.AsyncClient(base_url=base_url, timeout=10.0) as http:
                yield TokenService(http=http, grpc=token_pb2_grpc.TokenServiceStub(channel),
                                   components=runtime.components, settings=settings,
                                   base_url=base_url, grpc_port=runtime.grpc_port,
                                   client_changes=runtime.client_changes)
        finally:
            await channel.close()


@pytest_asyncio.fixture(scope="session")
async def token(store_settings: StoreSettings, registry_address: str,
                redis: aioredis.Redis) -> AsyncIterator[TokenService]:
    async with running(make_settings(store_settings, registry_address)) as service:
        yield service


@dataclass(frozen=True)
class Client:
    client_id: str
    secret: str
    public: bool
    redirect_uri: str = REDIRECT_URI


async def register_client(registry: registry_pb2_grpc.ClientRegistryAsyncStub, *,
                          public: bool = False,
                          scopes: Sequence[str] = ALL_SCOPES) -> Client:
    response = await registry.RegisterClient(registry_pb2.RegisterClientRequest(
        name="Test app", redirect_uris=[REDIRECT_URI], allowed_scopes=list(scopes),
        client_type=registry_pb2.CLIENT_TYPE_PUBLIC if public
        else registry_pb2.CLIENT_TYPE_CONFIDENTIAL,
        owner_user_id="owner-1"))
    return Client(response.client.client_id, response.client_secret, public)


@pytest_asyncio.fixture(scope="session")
async def client(registry: registry_pb2_grpc.ClientRegistryAsyncStub) -> Client:
    return await register_client(registry)


@pytest_asyncio.fixture(scope="session")
async def public_client(registry: registry_pb2_grpc.ClientRegistryAsyncStub) -> Client:
    return await register_client(registry, public=True)


VERIFIER = "v" * 20 + "-._~" + "A1" * 12


async def issue_code(redis: aioredis.Redis, prefix: str, client: Client, *,
                     user_id: str | None = None, scopes: Sequence[str] = SCOPES,
                     verifier: str | None = None, method: str = "S256",
                     redirect_uri: str = REDIRECT_URI) -> str:
    """Writes an ``AuthorizationCodeRecord`` the way the authorize service does."""
    code = credentials.new_authorization_code()
    now = Timestamp()
    now.FromSeconds(int(time.time()))
    record = AuthorizationCodeRecord(
        client_id=client.client_id, redirect_uri=redirect_uri,
        user_id=user_id or f"user-{credentials.random_urlsafe(6)}", scopes=list(scopes),
        code_challenge=pkce.s256(verifier) if verifier else "",
        code_challenge_method=method if verifier else "", auth_time=now, issued_at=now)
    await redis.set(credentials.authorization_code_key(prefix, code),
                    record.SerializeToString(), ex=60)
    return code


def client_fields(client: Client) -> dict[str, str]:
    fields = {"client_id": client.client_id}
    if not client.public:
        fields["client_secret"] = client.secret
    return fields


async def exchange(http: httpx.AsyncClient, client: Client, code: str,
                   **extra: str) -> httpx.Response:
    """The documented JSON exchange (step 4)."""
    body = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
            **client_fields(client), **extra}
    return await http.post("/oauth/token", content=json.dumps(body),
                           headers={"Content-Type": "application/json"})


async def refresh(http: httpx.AsyncClient, client: Client, refresh_token: str,
                  **extra: str) -> httpx.Response:
    """The documented JSON refresh."""
    body = {"grant_type": "refresh_token", "refresh_token": refresh_token,
            **client_fields(client), **extra}
    return await http.post("/oauth/token", content=json.dumps(body),
                           headers={"Content-Type": "application/json"})


def segments(access_token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """An access token's JOSE header and claims, decoded (not verified)."""
    assert access_token.startswith("otesse_at_")
    header, payload, _ = access_token[len("otesse_at_"):].split(".")

    def decode(segment: str) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(base64.urlsafe_b64decode(segment + "==="))
        return value

    return decode(header), decode(payload)


async def tokens_for(token: TokenService, redis: aioredis.Redis, prefix: str, client: Client,
                     **code_args: Any) -> dict[str, Any]:
    """A fresh grant: code issued and exchanged; returns the token response body."""
    verifier = VERIFIER if client.public else None
    code = await issue_code(redis, prefix, client, verifier=verifier, **code_args)
    extra = {"code_verifier": verifier} if verifier else {}
    response = await exchange(token.http, client, code, **extra)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def insert_previous_key(pool: asyncpg.Pool, *, expires_in_seconds: int) -> SigningKey:
    """A real retired ("previous") signing key, sealed under the KEK, added beside the keys in
    use (so tests never retire a key another test's service is signing with)."""
    private_key = ec.generate_private_key(ec.SECP256R1())
    jwk = public_jwk(private_key.public_key())
    await pool.execute(
        "INSERT INTO token.signing_keys (kid, state, public_jwk, private_key, retired_at,"
        " expires_at) VALUES ($1, 'previous', $2::jsonb, $3, now(),"
        " now() + $4::int * interval '1 second')",
        jwk["kid"], json.dumps(jwk),
        seal_private_key(private_key, kek=base64.b64decode(KEK), kid=jwk["kid"]),
        expires_in_seconds)
    return SigningKey(kid=jwk["kid"], state="previous", public_key=private_key.public_key(),
                      jwk=jwk, private_key=private_key, activated_at=None)

"""Grants and refresh tokens in Postgres (schema ``token``; RFC 6749 §4.1.3, §6; RFC 9700 §4.14).

Security promises of this store:

* only SHA-256 hashes of refresh tokens and authorization codes are stored;
* a grant and its first refresh token are written by one statement (one transaction), and a
  code hash can back one grant row only;
* a replayed code leaves no live grant behind, however late the first exchange commits: the
  replay's one statement (``revoke_replayed_code``) and the exchange's insert meet on the unique
  ``code_hash``, so the replay either revokes the committed grant, or waits for the exchange's
  in-flight insert and revokes it, or leaves a revoked *tombstone* row that makes the later
  insert fail (that exchange issues nothing). A tombstone has an empty user and client and no
  refresh token: it is never listed, never validates, and purge removes it like any revoked
  grant;
* a refresh token is rotated by one atomic statement that succeeds for exactly one caller: the
  old token is marked rotated and its successor inserted together, or nothing happens;
* revocation marks (``revoked_at``), never deletes; a revoked grant's tokens never refresh;
* statements are single and prepared; only ``create_grant`` writes two tables, in one statement.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import asyncpg

from services.token.denylist import GrantRevocation, Revocations, TokenRevocation
from services.token.settings import CLOCK_SKEW_SECONDS


class AuthorizationRevoked(Exception):
    """The user revoked this client after the code was issued: the code is void."""


class CodeAlreadyExchanged(Exception):
    """A grant already exists for this authorization code."""


@dataclass(frozen=True)
class RefreshRecord:
    """A refresh token's row, its grant, and the facts the refresh grant decides on (all
    computed by Postgres' clock, so replicas agree)."""

    grant_id: str
    user_id: str
    client_id: str
    scopes: tuple[str, ...]
    expired: bool
    grant_revoked: bool
    rotated: bool
    # Rotated less than the retry window ago, and the successor neither rotated nor expired.
    retry_allowed: bool
    successor_sealed: bytes | None


@dataclass(frozen=True)
class GrantRecord:
    grant_id: str
    user_id: str
    client_id: str
    scopes: tuple[str, ...]
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime


@dataclass(frozen=True)
class RefreshTokenInfo:
    """What introspection shows of a live refresh token."""

    grant_id: str
    user_id: str
    client_id: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime
    active: bool


@dataclass(frozen=True)
class RevokeResult:
    # How many grants this call revoked (already revoked ones are not counted).
    revoked: int
    # Every matched grant whose access tokens may still be alive: newly and already revoked,
    # so a retried call re-asserts the deny-list.
    deny: Revocations


class GrantStore(Protocol):
    """Grants and refresh tokens. Stores only hashes; one grant per code; rotation succeeds for
    exactly one caller; revocation marks and never deletes (see the module docstring)."""

    async def create_grant(self, *, grant_id: str, user_id: str, client_id: str,
                           scopes: Sequence[str], code_hash: bytes, refresh_hash: bytes,
                           refresh_ttl: int, code_issued_at: float) -> None: ...

    async def revoke_replayed_code(self, *, code_hash: bytes) -> RevokeResult: ...

    async def find_refresh(self, *, token_hash: bytes, retry_window: int,
                           ) -> RefreshRecord | None: ...

    async def rotate_refresh(self, *, token_hash: bytes, successor_hash: bytes,
                             successor_sealed: bytes | None, refresh_ttl: int) -> bool: ...

    async def refresh_token_info(self, *, token_hash: bytes) -> RefreshTokenInfo | None: ...

    async def revoke_grants(self, *, grant_id: str | None = None, user_id: str | None = None,
                            client_id: str | None = None) -> RevokeResult: ...

    async def revoke_access_token(self, *, jti: str, grant_id: str, client_id: str,
                                  expires_at: int) -> None: ...

    async def list_grants(self, *, user_id: str) -> list[GrantRecord]: ...

    async def live_revocations(self, since: float | None = None) -> Revocations: ...

    async def is_revoked(self, *, jti: str, grant_id: str) -> bool: ...


def _revocations(rows: Sequence[asyncpg.Record]) -> Revocations:
    return Revocations(grants=[GrantRevocation(str(row["grant_id"]),
                                               row["revoked_at"].timestamp()) for row in rows],
                       tokens=[])


class PgGrantStore:
    def __init__(self, pool: asyncpg.Pool, *, access_token_ttl: int) -> None:
        self._pool = pool
        # Revoked grants younger than this may still have live access tokens.
        self._deny_window = access_token_ttl + CLOCK_SKEW_SECONDS

    async def create_grant(self, *, grant_id: str, user_id: str, client_id: str,
                           scopes: Sequence[str], code_hash: bytes, refresh_hash: bytes,
                           refresh_ttl: int, code_issued_at: float) -> None:
        # One statement: the grant is written only if the user has not revoked this client
        # since the code was issued, and its first refresh token with it.
        try:
            status = await self._pool.execute(
                "WITH g AS ("
                " INSERT INTO token.grants (grant_id, user_id, client_id, scopes, code_hash,"
                "  expires_at)"
                " SELECT $1, $2, $3, $4, $5, now() + $7::int * interval '1 second'"
                " WHERE NOT EXISTS (SELECT 1 FROM token.authorization_revocations a"
                "  WHERE a.user_id = $2 AND a.client_id = $3"
                "  AND a.revoked_at > to_timestamp($8))"
                " RETURNING grant_id, expires_at)"
                " INSERT INTO token.refresh_tokens (token_hash, grant_id, expires_at)"
                " SELECT $6, grant_id, expires_at FROM g",
                uuid.UUID(grant_id), user_id, client_id, list(scopes), code_hash, refresh_hash,
                refresh_ttl, code_issued_at)
        except asyncpg.UniqueViolationError:
            raise CodeAlreadyExchanged() from None
        if status.endswith(" 0"):
            raise AuthorizationRevoked()

    async def revoke_replayed_code(self, *, code_hash: bytes) -> RevokeResult:
        """Revokes the grant a replayed code produced, or bars one from ever being created.

        One statement keeps the module's promise: the upsert and ``create_grant``'s insert
        serialize on the unique ``code_hash`` (an insert in flight is waited for), so whichever
        commits first, the code's grant ends revoked or never exists. ``deny`` is empty when a
        tombstone was left (no grant, no tokens to deny).
        """
        tombstone_id = uuid.uuid4()
        row = await self._pool.fetchrow(
            "INSERT INTO token.grants AS g (grant_id, user_id, client_id, scopes, code_hash,"
            " expires_at, revoked_at)"
            " VALUES ($1, '', '', '{}', $2, now(), now())"
            " ON CONFLICT (code_hash) DO UPDATE SET revoked_at = coalesce(g.revoked_at, now())"
            " RETURNING grant_id, revoked_at, revoked_at = now() AS newly",
            tombstone_id, code_hash)
        assert row is not None
        if row["grant_id"] == tombstone_id:
            return RevokeResult(revoked=0, deny=Revocations(grants=[], tokens=[]))
        return RevokeResult(revoked=int(row["newly"]), deny=_revocations([row]))

    async def find_refresh(self, *, token_hash: bytes, retry_window: int,
                           ) -> RefreshRecord | None:
        row = await self._pool.fetchrow(
            "SELECT r.grant_id, g.user_id, g.client_id, g.scopes,"
            " r.expires_at <= now() AS expired,"
            " g.revoked_at IS NOT NULL AS grant_revoked,"
            " r.rotated_at IS NOT NULL AS rotated,"
            " (r.rotated_at > now() - $2::int * interval '1 second'"
            "  AND s.rotated_at IS NULL AND s.expires_at > now()) AS retry_allowed,"
            " r.successor_sealed"
            " FROM token.refresh_tokens r JOIN token.grants g ON g.grant_id = r.grant_id"
            " LEFT JOIN token.refresh_tokens s ON s.token_hash = r.successor_hash"
            " WHERE r.token_hash = $1",
            token_hash, retry_window)
        if row is None:
            return None
        return RefreshRecord(grant_id=str(row["grant_id"]), user_id=row["user_id"],
                             client_id=row["client_id"], scopes=tuple(row["scopes"]),
                             expired=row["expired"], grant_revoked=row["grant_revoked"],
                             rotated=row["rotated"], retry_allowed=bool(row["retry_allowed"]),
                             successor_sealed=row["successor_sealed"])

    async def rotate_refresh(self, *, token_hash: bytes, successor_hash: bytes,
                             successor_sealed: bytes | None, refresh_ttl: int) -> bool:
        # One statement: the WHERE on rotated_at lets exactly one of any number of concurrent
        # callers mark the old token; only that caller's successor is inserted.
        grant_id = await self._pool.fetchval(
            "WITH old AS ("
            " UPDATE token.refresh_tokens SET rotated_at = now(), successor_hash = $2,"
            "  successor_sealed = $3"
            " WHERE token_hash = $1 AND rotated_at IS NULL AND expires_at > now()"
            " RETURNING grant_id),"
            " g AS ("
            " UPDATE token.grants SET last_used_at = now(),"
            "  expires_at = now() + $4::int * interval '1 second'"
            " WHERE grant_id = (SELECT grant_id FROM old) AND revoked_at IS NULL"
            " RETURNING grant_id, expires_at)"
            " INSERT INTO token.refresh_tokens (token_hash, grant_id, expires_at)"
            " SELECT $2, grant_id, expires_at FROM g RETURNING grant_id",
            token_hash, successor_hash, successor_sealed, refresh_ttl)
        return grant_id is not None

    async def refresh_token_info(self, *, token_hash: bytes) -> RefreshTokenInfo | None:
        row = await self._pool.fetchrow(
            "SELECT r.grant_id, g.user_id, g.client_id, g.scopes, r.created_at, r.expires_at,"
            " (r.rotated_at IS NULL AND r.expires_at > now() AND g.revoked_at IS NULL) AS active"
            " FROM token.refresh_tokens r JOIN token.grants g ON g.grant_id = r.grant_id"
            " WHERE r.token_hash = $1",
            token_hash)
        if row is None:
            return None
        return RefreshTokenInfo(grant_id=str(row["grant_id"]), user_id=row["user_id"],
                                client_id=row["client_id"], scopes=tuple(row["scopes"]),
                                created_at=row["created_at"], expires_at=row["expires_at"],
                                active=row["active"])

    async def revoke_grants(self, *, grant_id: str | None = None, user_id: str | None = None,
                            client_id: str | None = None) -> RevokeResult:
        if grant_id is None and user_id is None and client_id is None:
            raise ValueError("a selector is required")
        # The CTE's UPDATE and the second SELECT see the same snapshot, so "already revoked"
        # rows are only those revoked before this call.
        rows = await self._pool.fetch(
            # A user revoking one client also bars the codes already issued to it (see
            # create_grant); the data-modifying CTE runs even though nothing reads it.
            "WITH barred AS ("
            " INSERT INTO token.authorization_revocations (user_id, client_id, revoked_at)"
            " SELECT $2, $3, now() WHERE $1::uuid IS NULL AND $2::text IS NOT NULL"
            "  AND $3::text IS NOT NULL"
            " ON CONFLICT (user_id, client_id) DO UPDATE SET revoked_at = excluded.revoked_at),"
            " matched AS ("
            " SELECT grant_id FROM token.grants"
            " WHERE ($1::uuid IS NULL OR grant_id = $1)"
            "  AND ($2::text IS NULL OR user_id = $2) AND ($3::text IS NULL OR client_id = $3)),"
            " revoked AS ("
            " UPDATE token.grants SET revoked_at = now()"
            " WHERE grant_id IN (SELECT grant_id FROM matched) AND revoked_at IS NULL"
            " RETURNING grant_id, revoked_at)"
            " SELECT grant_id, revoked_at, true AS newly FROM revoked"
            " UNION ALL"
            " SELECT grant_id, revoked_at, false FROM token.grants"
            " WHERE grant_id IN (SELECT grant_id FROM matched)"
            "  AND revoked_at > now() - $4::int * interval '1 second'",
            uuid.UUID(grant_id) if grant_id else None, user_id, client_id, self._deny_window)
        return RevokeResult(revoked=sum(1 for row in rows if row["newly"]),
                            deny=_revocations(rows))

    async def revoke_access_token(self, *, jti: str, grant_id: str, client_id: str,
                                  expires_at: int) -> None:
        await self._pool.execute(
            "INSERT INTO token.revoked_access_tokens (jti, grant_id, client_id, expires_at)"
            " VALUES ($1, $2, $3, to_timestamp($4)) ON CONFLICT (jti) DO NOTHING",
            jti, uuid.UUID(grant_id), client_id, float(expires_at))

    async def list_grants(self, *, user_id: str) -> list[GrantRecord]:
        rows = await self._pool.fetch(
            "SELECT grant_id, user_id, client_id, scopes, created_at, last_used_at, expires_at"
            " FROM token.grants"
            " WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()"
            " ORDER BY created_at DESC, grant_id",
            user_id)
        return [GrantRecord(grant_id=str(row["grant_id"]), user_id=row["user_id"],
                            client_id=row["client_id"], scopes=tuple(row["scopes"]),
                            created_at=row["created_at"], last_used_at=row["last_used_at"],
                            expires_at=row["expires_at"]) for row in rows]

    async def live_revocations(self, since: float | None = None) -> Revocations:
        """Revocations whose access tokens may still be alive; with ``since`` (Unix time), only
        those recorded after it."""
        after = float(since) if since is not None else 0.0
        grants = await self._pool.fetch(
            "SELECT grant_id, revoked_at FROM token.grants"
            " WHERE revoked_at > greatest(now() - $1::int * interval '1 second',"
            "  to_timestamp($2::float8)) AND user_id <> ''",  # tombstones have no tokens
            self._deny_window, after)
        tokens = await self._pool.fetch(
            "SELECT jti, expires_at FROM token.revoked_access_tokens"
            " WHERE expires_at > now() AND revoked_at > to_timestamp($1::float8)", after)
        return Revocations(
            grants=_revocations(grants).grants,
            tokens=[TokenRevocation(row["jti"], row["expires_at"].timestamp())
                    for row in tokens])

    async def is_revoked(self, *, jti: str, grant_id: str) -> bool:
        """Whether this access token, or its grant, is recorded as revoked: the deny-list's
        answer when Redis cannot give it. One statement, two primary-key lookups."""
        revoked: bool = await self._pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM token.grants"
            "  WHERE grant_id = $2 AND revoked_at IS NOT NULL)"
            " OR EXISTS (SELECT 1 FROM token.revoked_access_tokens WHERE jti = $1)",
            jti, uuid.UUID(grant_id))
        return revoked

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
  grant is read and every condition of the refresh checked, the old token is marked rotated
  and its successor inserted together, or nothing happens; a refresh is that one round trip
  when it succeeds;
* revocation marks (``revoked_at``), never deletes; a revoked grant's tokens never refresh;
* statements are single and prepared; ``create_grant`` writes a grant and its refresh token in
  one statement;
* exchanges (and refreshes) that arrive while earlier ones are being written share the next
  statement and its commit (:mod:`services.common.batches`): one statement writes each
  one's rows, decides each one's outcome on its own (a revoked authorization, a code already
  exchanged, a token not this client's…) and records each one's audit event with its own
  origin, so sharing changes what Postgres spends per request and nothing a request sees. A
  statement that fails for any reason but an outage is redone one write at a time, so a write
  that breaks it fails alone;
* every issue and revocation is in the audit trail, written by the statement that makes it
  (one more CTE: :func:`services.common.audit.insert_from`), so neither commits without the
  other and the hot paths gain no round trip: ``token.issued`` with the grant and with each
  rotation, ``grant.revoked`` for each grant a revocation ends (who, and why), and the attack
  that caused one (``code.replayed``, ``refresh_token.reused``) beside it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

import asyncpg

from services.common import audit, db
from services.common.audit import Actor, Origin
from services.common.batches import Batches, shared_or_alone
from services.token.revocations import GrantRevocation, Revocations, TokenRevocation
from services.token.settings import CLOCK_SKEW_SECONDS

# Statements of one kind of write (exchanges; refreshes) running at once in a replica; the
# writes that arrive meanwhile wait for one to end and go together in the next.
BATCHES_IN_FLIGHT = 2
MAX_BATCH = 32


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
class Rotation:
    """A refresh token rotated: its grant, the grant's user, and the scope granted now."""

    grant_id: str
    user_id: str
    scopes: tuple[str, ...]


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


# Why a grant was revoked, as the audit trail says it (the actor says who).
RevocationReason = Literal["user_revoked_app", "app_deleted", "client_revoked_token",
                           "operator", "refresh_token_reuse", "code_replay"]


@dataclass(frozen=True)
class RevokedBy:
    """Who revokes, why and from where: what the audit trail records of a revocation."""

    actor: Actor
    reason: RevocationReason
    origin: Origin
    # The refresh-token reuse that caused this revocation, and who presented the token: a
    # ``refresh_token.reused`` event in the same statement (grant_id selector only).
    reuse_presented_by: Actor | None = None


class GrantStore(Protocol):
    """Grants and refresh tokens. Stores only hashes; one grant per code; rotation succeeds for
    exactly one caller; revocation marks and never deletes (see the module docstring)."""

    async def create_grant(self, *, grant_id: str, user_id: str, client_id: str,
                           scopes: Sequence[str], code_hash: bytes, refresh_hash: bytes,
                           refresh_ttl: int, code_issued_at: float, origin: Origin) -> None: ...

    async def revoke_replayed_code(self, *, code_hash: bytes, presented_by: str,
                                   origin: Origin) -> RevokeResult: ...

    async def find_refresh(self, *, token_hash: bytes, retry_window: int,
                           ) -> RefreshRecord | None: ...

    async def rotate_refresh(self, *, token_hash: bytes, successor_hash: bytes,
                             successor_sealed: bytes | None, refresh_ttl: int, client_id: str,
                             allowed_scopes: Sequence[str],
                             requested_scopes: Sequence[str] | None,
                             origin: Origin) -> Rotation | None:
        """Checks and rotates in one statement; ``None`` when it did nothing (find out why
        with :meth:`find_refresh`)."""
        ...

    async def refresh_token_info(self, *, token_hash: bytes) -> RefreshTokenInfo | None: ...

    async def revoke_grants(self, *, by: RevokedBy, grant_id: str | None = None,
                            user_id: str | None = None, client_id: str | None = None,
                            ) -> RevokeResult: ...

    async def revoke_access_token(self, *, jti: str, grant_id: str, client_id: str,
                                  user_id: str, expires_at: int, origin: Origin) -> None: ...

    async def list_grants(self, *, user_id: str) -> list[GrantRecord]: ...

    async def live_revocations(self, since: float | None = None) -> Revocations: ...

    async def is_revoked(self, *, jti: str, grant_id: str) -> bool: ...


def _revocations(rows: Sequence[asyncpg.Record]) -> Revocations:
    return Revocations(grants=[GrantRevocation(str(row["grant_id"]),
                                               row["revoked_at"].timestamp()) for row in rows],
                       tokens=[])


# What one write does alone (no other waited to share its statement), and the same for several
# rows at once (services.common.batches): the grant, its first refresh token and its audit
# event. Each grant is written only if the user has not revoked this client since the code
# was issued; the unique code_hash meets a replay's tombstone (revoke_replayed_code).
_CREATE_GRANT = (
    "WITH g AS ("
    " INSERT INTO token.grants (grant_id, user_id, client_id, scopes, code_hash, expires_at)"
    " SELECT $1, $2, $3, $4, $5, now() + $7::int * interval '1 second'"
    " WHERE NOT EXISTS (SELECT 1 FROM token.authorization_revocations a"
    "  WHERE a.user_id = $2 AND a.client_id = $3 AND a.revoked_at > to_timestamp($8))"
    " RETURNING grant_id, expires_at),"
    " audited AS (" + audit.insert_from(
        "token.issued", first=9, rows="g", subject="$2::text", client="$3::text",
        grant="grant_id") + ")"
    " INSERT INTO token.refresh_tokens (token_hash, grant_id, expires_at)"
    " SELECT $6, grant_id, expires_at FROM g")
# Scopes travel space-separated (no scope holds a space: services.common.scopes), since an
# array of arrays must be rectangular. ON CONFLICT DO NOTHING waits for a conflicting insert in
# flight as the unique violation does, and then names the grant not created.
_CREATE_GRANTS = (
    "WITH i AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[],"
    "  $5::bytea[], $6::bytea[], $7::int[], $8::float8[], $9::text[], $10::text[],"
    "  $11::inet[], $12::text[], $13::text[])"
    "  AS i(grant_id, user_id, client_id, scopes, code_hash, refresh_hash, refresh_ttl,"
    "   code_issued_at, actor_kind, actor_id, client_ip, request_id, details)),"
    " r AS (SELECT i.*, EXISTS (SELECT 1 FROM token.authorization_revocations a"
    "  WHERE a.user_id = i.user_id AND a.client_id = i.client_id"
    "  AND a.revoked_at > to_timestamp(i.code_issued_at)) AS revoked FROM i),"
    " g AS ("
    " INSERT INTO token.grants (grant_id, user_id, client_id, scopes, code_hash, expires_at)"
    " SELECT grant_id, user_id, client_id, string_to_array(scopes, ' '), code_hash,"
    "  now() + refresh_ttl * interval '1 second' FROM r WHERE NOT revoked"
    " ON CONFLICT (code_hash) DO NOTHING"
    " RETURNING grant_id, expires_at),"
    " made AS (SELECT r.*, g.expires_at FROM r JOIN g USING (grant_id)),"
    " audited AS (" + audit.insert_from_rows(
        "token.issued", rows="made", subject="user_id", client="client_id",
        grant="grant_id") + "),"
    " tokens AS (INSERT INTO token.refresh_tokens (token_hash, grant_id, expires_at)"
    "  SELECT refresh_hash, grant_id, expires_at FROM made)"
    " SELECT r.grant_id, r.revoked, g.grant_id IS NOT NULL AS created"
    " FROM r LEFT JOIN g USING (grant_id)")

# A rotation alone, and several at once. The WHERE on rotated_at lets exactly one of any number
# of concurrent callers mark the old token. The grant row is read FOR SHARE, never written: a
# concurrent revocation waits for this statement, or this statement sees it (and does
# nothing); its last use and expiry are those of its newest refresh token (list_grants). The
# old row's update names no indexed column: Postgres writes it in place (HOT), no index entry;
# the sealed copy goes with the successor's insert (migration 0004).
_ROTATE_REFRESH = (
    "WITH g AS ("
    " SELECT g.grant_id, g.user_id,"
    # The scope granted now: the grant's, in its order, that the client may still have,
    # narrowed to the requested scope if there is one.
    "  ARRAY(SELECT s FROM unnest(g.scopes) WITH ORDINALITY AS u(s, i)"
    "   WHERE s = ANY($6::text[]) AND ($7::text[] IS NULL OR s = ANY($7::text[]))"
    "   ORDER BY i) AS granted"
    " FROM token.refresh_tokens r JOIN token.grants g ON g.grant_id = r.grant_id"
    " WHERE r.token_hash = $1 AND g.client_id = $5 AND g.revoked_at IS NULL"
    " FOR SHARE OF g),"
    " old AS ("
    " UPDATE token.refresh_tokens r SET rotated_at = now(), successor_hash = $2"
    " FROM g WHERE r.token_hash = $1 AND r.rotated_at IS NULL AND r.expires_at > now()"
    "  AND cardinality(g.granted) > 0 AND ($7::text[] IS NULL OR $7::text[] <@ g.granted)"
    " RETURNING g.grant_id, g.user_id, g.granted),"
    " audited AS (" + audit.insert_from(
        "token.issued", first=8, rows="old", subject="user_id", client="$5::text",
        grant="grant_id", scope="granted") + "),"
    " successor AS ("
    " INSERT INTO token.refresh_tokens (token_hash, grant_id, expires_at, predecessor_sealed)"
    " SELECT $2, grant_id, now() + $4::int * interval '1 second', $3 FROM old)"
    " SELECT grant_id, user_id, granted FROM old")
# n: each rotation's place in the batch (no token appears twice: PgGrantStore._rotate).
_ROTATE_REFRESHES = (
    "WITH i AS (SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bytea[], $4::int[],"
    "  $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::inet[], $11::text[],"
    "  $12::text[]) WITH ORDINALITY"
    "  AS i(token_hash, successor_hash, successor_sealed, refresh_ttl, client_id, allowed,"
    "   requested, actor_kind, actor_id, client_ip, request_id, details, n)),"
    " g AS ("
    " SELECT i.n, g.grant_id, g.user_id,"
    "  ARRAY(SELECT s FROM unnest(g.scopes) WITH ORDINALITY AS u(s, k)"
    "   WHERE s = ANY(string_to_array(i.allowed, ' '))"
    "   AND (i.requested IS NULL OR s = ANY(string_to_array(i.requested, ' ')))"
    "   ORDER BY k) AS granted"
    " FROM i JOIN token.refresh_tokens r ON r.token_hash = i.token_hash"
    " JOIN token.grants g ON g.grant_id = r.grant_id"
    " WHERE g.client_id = i.client_id AND g.revoked_at IS NULL"
    " FOR SHARE OF g),"
    " old AS ("
    " UPDATE token.refresh_tokens r SET rotated_at = now(), successor_hash = i.successor_hash"
    " FROM g JOIN i USING (n)"
    " WHERE r.token_hash = i.token_hash AND r.rotated_at IS NULL AND r.expires_at > now()"
    "  AND cardinality(g.granted) > 0"
    "  AND (i.requested IS NULL OR string_to_array(i.requested, ' ') <@ g.granted)"
    " RETURNING i.*, g.grant_id, g.user_id, g.granted),"
    " audited AS (" + audit.insert_from_rows(
        "token.issued", rows="old", subject="user_id", client="client_id", grant="grant_id",
        scope="granted") + "),"
    " successor AS ("
    " INSERT INTO token.refresh_tokens (token_hash, grant_id, expires_at, predecessor_sealed)"
    " SELECT successor_hash, grant_id, now() + refresh_ttl * interval '1 second',"
    "  successor_sealed FROM old)"
    " SELECT n, grant_id, user_id, granted FROM old")

AuditParams = tuple[str, str, str | None, str | None, str]
_NotCreated = type[CodeAlreadyExchanged] | type[AuthorizationRevoked]


@dataclass(frozen=True)
class _NewGrant:
    grant_id: uuid.UUID
    user_id: str
    client_id: str
    scopes: tuple[str, ...]
    code_hash: bytes
    refresh_hash: bytes
    refresh_ttl: int
    code_issued_at: float
    audit: AuditParams  # audit.params: actor kind and id, client IP, request id, details


@dataclass(frozen=True)
class _NewRotation:
    token_hash: bytes
    successor_hash: bytes
    successor_sealed: bytes | None
    refresh_ttl: int
    client_id: str
    allowed: tuple[str, ...]
    requested: tuple[str, ...] | None  # None: the scope granted
    audit: AuditParams


def _rotation(row: asyncpg.Record) -> Rotation:
    return Rotation(grant_id=str(row["grant_id"]), user_id=row["user_id"],
                    scopes=tuple(row["granted"]))


def _scopes(scopes: Sequence[str]) -> tuple[str, ...]:
    """``scopes``, checked to travel space-separated in a shared statement."""
    if any(" " in scope for scope in scopes):
        raise ValueError("a scope holds a space")
    return tuple(scopes)


def _columns(rows: Sequence[_NewGrant] | Sequence[_NewRotation],
             names: Sequence[str]) -> list[list[object]]:
    """The parameters of a shared statement: one array per field named (scopes
    space-separated, since an array of arrays must be rectangular), then one per audit
    parameter."""
    columns = [[_sql(getattr(row, name)) for row in rows] for name in names]
    columns.extend(list(values) for values in zip(*(row.audit for row in rows), strict=True))
    return columns


def _sql(value: object) -> object:
    return " ".join(value) if isinstance(value, tuple) else value


class PgGrantStore:
    def __init__(self, pool: db.Queries, *, access_token_ttl: int,
                 batches_in_flight: int = BATCHES_IN_FLIGHT) -> None:
        self._pool = pool
        self._exchanges: Batches[_NewGrant, _NotCreated | None] = Batches(
            self._create_grants, kind="exchange", max_in_flight=batches_in_flight,
            max_size=MAX_BATCH)
        self._rotations: Batches[_NewRotation, Rotation | None] = Batches(
            self._rotate, kind="refresh", max_in_flight=batches_in_flight,
            max_size=MAX_BATCH)
        # Revoked grants younger than this may still have live access tokens.
        self._deny_window = access_token_ttl + CLOCK_SKEW_SECONDS

    async def create_grant(self, *, grant_id: str, user_id: str, client_id: str,
                           scopes: Sequence[str], code_hash: bytes, refresh_hash: bytes,
                           refresh_ttl: int, code_issued_at: float, origin: Origin) -> None:
        # The grant is written only if the user has not revoked this client since the code was
        # issued, and its first refresh token and its audit event with it, by one statement
        # (shared with the exchanges that arrive meanwhile: services.common.batches).
        outcome = await self._exchanges.submit(_NewGrant(
            grant_id=uuid.UUID(grant_id), user_id=user_id, client_id=client_id,
            scopes=_scopes(scopes), code_hash=code_hash, refresh_hash=refresh_hash,
            refresh_ttl=refresh_ttl, code_issued_at=code_issued_at,
            audit=audit.params(Actor.client(client_id), origin, {
                "grant_type": "authorization_code", "scope": " ".join(scopes)})))
        if outcome is not None:
            raise outcome()
        audit.counted("token.issued")

    async def wait_idle(self) -> None:
        """Returns once no write is under way (before the pool closes)."""
        await self._exchanges.wait_idle()
        await self._rotations.wait_idle()

    async def _create_grants(self, grants: Sequence[_NewGrant],
                             ) -> Sequence[_NotCreated | None | Exception]:
        """Each grant written, or why not (a batch's runner)."""
        return await shared_or_alone(grants, shared=self._create_together,
                                     alone=self._create_one)

    async def _create_together(self, grants: Sequence[_NewGrant]) -> list[_NotCreated | None]:
        rows = await self._pool.fetch(_CREATE_GRANTS, *_columns(grants, (
            "grant_id", "user_id", "client_id", "scopes", "code_hash", "refresh_hash",
            "refresh_ttl", "code_issued_at")))
        why = {str(row["grant_id"]): None if row["created"] else (
            AuthorizationRevoked if row["revoked"] else CodeAlreadyExchanged) for row in rows}
        return [why[str(grant.grant_id)] for grant in grants]

    async def _create_one(self, grant: _NewGrant) -> _NotCreated | None:
        try:
            status = await self._pool.execute(
                _CREATE_GRANT, grant.grant_id, grant.user_id, grant.client_id,
                list(grant.scopes), grant.code_hash, grant.refresh_hash, grant.refresh_ttl,
                grant.code_issued_at, *grant.audit)
        except asyncpg.UniqueViolationError:
            return CodeAlreadyExchanged
        return AuthorizationRevoked if status.endswith(" 0") else None

    async def revoke_replayed_code(self, *, code_hash: bytes, presented_by: str,
                                   origin: Origin) -> RevokeResult:
        """Revokes the grant a replayed code produced, or bars one from ever being created.

        One statement keeps the module's promise: the upsert and ``create_grant``'s insert
        serialize on the unique ``code_hash`` (an insert in flight is waited for), so whichever
        commits first, the code's grant ends revoked or never exists. ``deny`` is empty when a
        tombstone was left (no grant, no tokens to deny). The same statement records the replay
        (by the client that presented the code) and the revocation (by the system).
        """
        tombstone_id = uuid.uuid4()
        row = await self._pool.fetchrow(
            "WITH r AS ("
            "INSERT INTO token.grants AS g (grant_id, user_id, client_id, scopes, code_hash,"
            " expires_at, revoked_at)"
            " VALUES ($1, '', '', '{}', $2, now(), now())"
            " ON CONFLICT (code_hash) DO UPDATE SET revoked_at = coalesce(g.revoked_at, now())"
            " RETURNING grant_id, revoked_at, revoked_at = now() AS newly, user_id, client_id),"
            # A tombstone (no user) stands for no grant: the replay names none.
            " replayed AS (" + audit.insert_from(
                "code.replayed", first=3, rows="r", subject="nullif(user_id, '')",
                client="coalesce(nullif(client_id, ''), $4::text)",
                grant="CASE WHEN user_id <> '' THEN grant_id END") + "),"
            " revoked AS (" + audit.insert_from(
                "grant.revoked", first=8, rows="r", subject="user_id", client="client_id",
                grant="grant_id", where="newly AND user_id <> ''") + ")"
            " SELECT grant_id, revoked_at, newly FROM r",
            tombstone_id, code_hash,
            *audit.params(Actor.client(presented_by), origin),
            *audit.params(Actor.system(), origin, {"reason": "code_replay"}))
        assert row is not None
        audit.counted("code.replayed")
        if row["grant_id"] == tombstone_id:
            return RevokeResult(revoked=0, deny=Revocations(grants=[], tokens=[]))
        audit.counted("grant.revoked", int(row["newly"]))
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
            # The copy travels with the successor (migration 0004); an older replica left it on
            # the old token.
            " coalesce(s.predecessor_sealed, r.successor_sealed) AS successor_sealed"
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
                             successor_sealed: bytes | None, refresh_ttl: int, client_id: str,
                             allowed_scopes: Sequence[str],
                             requested_scopes: Sequence[str] | None,
                             origin: Origin) -> Rotation | None:
        # One statement, the refresh's only round trip (shared with the refreshes that arrive
        # meanwhile: services.common.batches): it reads the grant, checks everything the
        # refresh grant decides on (RFC 6749 §6: the token is this client's, live and not
        # rotated, its grant not revoked, the requested scope within the scope granted and
        # still allowed to the client), marks the old token and inserts its successor, or does
        # nothing at all (the caller then reads why: find_refresh).
        rotation = await self._rotations.submit(_NewRotation(
            token_hash=token_hash, successor_hash=successor_hash,
            successor_sealed=successor_sealed, refresh_ttl=refresh_ttl, client_id=client_id,
            allowed=_scopes(allowed_scopes),
            requested=None if requested_scopes is None else _scopes(requested_scopes),
            audit=audit.params(Actor.client(client_id), origin, {"grant_type": "refresh_token"})))
        if rotation is not None:
            audit.counted("token.issued")
        return rotation

    async def _rotate(self, rotations: Sequence[_NewRotation],
                      ) -> Sequence[Rotation | None | Exception]:
        """Each rotation made, or ``None`` where it did nothing (a batch's runner)."""
        return await shared_or_alone(rotations, shared=self._rotate_together,
                                     alone=self._rotate_one)

    async def _rotate_together(self, rotations: Sequence[_NewRotation],
                               ) -> list[Rotation | None | Exception]:
        # Two presentations of one token never share a statement (Postgres updates a row once
        # per statement): the second runs after, alone, and finds the token rotated.
        first: dict[bytes, int] = {}
        for index, rotation in enumerate(rotations):
            first.setdefault(rotation.token_hash, index)
        placed = list(first.values())
        rows = await self._pool.fetch(_ROTATE_REFRESHES, *_columns(
            [rotations[index] for index in placed],
            ("token_hash", "successor_hash", "successor_sealed", "refresh_ttl", "client_id",
             "allowed", "requested")))
        made: list[Rotation | None | Exception] = [None] * len(rotations)
        for row in rows:
            made[placed[row["n"] - 1]] = _rotation(row)
        for index, rotation in enumerate(rotations):
            if first[rotation.token_hash] != index:
                # Committed rotations are not redone: this one's error is its own.
                try:
                    made[index] = await self._rotate_one(rotation)
                except Exception as exc:  # noqa: BLE001 - its writer gets it
                    made[index] = exc
        return made

    async def _rotate_one(self, rotation: _NewRotation) -> Rotation | None:
        row = await self._pool.fetchrow(
            _ROTATE_REFRESH, rotation.token_hash, rotation.successor_hash,
            rotation.successor_sealed, rotation.refresh_ttl, rotation.client_id,
            list(rotation.allowed),
            None if rotation.requested is None else list(rotation.requested),
            *rotation.audit)
        return None if row is None else _rotation(row)

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

    async def revoke_grants(self, *, by: RevokedBy, grant_id: str | None = None,
                            user_id: str | None = None, client_id: str | None = None,
                            ) -> RevokeResult:
        if grant_id is None and user_id is None and client_id is None:
            raise ValueError("a selector is required")
        if by.reuse_presented_by is not None and grant_id is None:
            raise ValueError("a reuse revokes one grant, by its id")
        reuse = (audit.params(by.reuse_presented_by, by.origin)
                 if by.reuse_presented_by is not None else (None,) * 5)
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
            " RETURNING grant_id, revoked_at, user_id, client_id),"
            " audited AS (" + audit.insert_from(
                "grant.revoked", first=5, rows="revoked", subject="nullif(user_id, '')",
                client="nullif(client_id, '')", grant="grant_id") + "),"
            # Only when a reuse caused this call: recorded even if the grant was revoked first.
            " reused AS (" + audit.insert_from(
                "refresh_token.reused", first=10, rows="token.grants d",
                subject="nullif(d.user_id, '')", client="nullif(d.client_id, '')",
                grant="d.grant_id", where="d.grant_id = $1 AND $10::text IS NOT NULL") + ")"
            " SELECT grant_id, revoked_at, true AS newly FROM revoked"
            " UNION ALL"
            " SELECT grant_id, revoked_at, false FROM token.grants"
            " WHERE grant_id IN (SELECT grant_id FROM matched)"
            "  AND revoked_at > now() - $4::int * interval '1 second'",
            uuid.UUID(grant_id) if grant_id else None, user_id, client_id, self._deny_window,
            *audit.params(by.actor, by.origin, {"reason": by.reason}), *reuse)
        revoked = sum(1 for row in rows if row["newly"])
        audit.counted("grant.revoked", revoked)
        if by.reuse_presented_by is not None:
            audit.counted("refresh_token.reused")
        return RevokeResult(revoked=revoked, deny=_revocations(rows))

    async def revoke_access_token(self, *, jti: str, grant_id: str, client_id: str,
                                  user_id: str, expires_at: int, origin: Origin) -> None:
        # Recorded (by the client, RFC 7009) only the first time; the token's id is not.
        status = await self._pool.execute(
            "WITH t AS ("
            "INSERT INTO token.revoked_access_tokens (jti, grant_id, client_id, expires_at)"
            " VALUES ($1, $2, $3, to_timestamp($4)) ON CONFLICT (jti) DO NOTHING"
            " RETURNING grant_id, client_id) "
            + audit.insert_from("access_token.revoked", first=6, rows="t", subject="$5::text",
                                client="client_id", grant="grant_id"),
            jti, uuid.UUID(grant_id), client_id, float(expires_at), user_id,
            *audit.params(Actor.client(client_id), origin))
        audit.counted("access_token.revoked", int(status.rsplit(" ", 1)[-1]))

    async def list_grants(self, *, user_id: str) -> list[GrantRecord]:
        # A grant's last use and expiry are its newest refresh token's (rotate_refresh does
        # not write the grant); the grant's own columns count too: they are what a grant
        # refreshed before that change (or by an older replica during a rolling update) kept.
        rows = await self._pool.fetch(
            "SELECT g.grant_id, g.user_id, g.client_id, g.scopes, g.created_at,"
            " greatest(g.last_used_at, n.created_at) AS last_used_at,"
            " greatest(g.expires_at, n.expires_at) AS expires_at"
            " FROM token.grants g LEFT JOIN LATERAL ("
            "  SELECT r.created_at, r.expires_at FROM token.refresh_tokens r"
            "  WHERE r.grant_id = g.grant_id AND r.created_at > g.created_at"
            "  ORDER BY r.created_at DESC LIMIT 1) n ON true"
            " WHERE g.user_id = $1 AND g.revoked_at IS NULL"
            "  AND greatest(g.expires_at, n.expires_at) > now()"
            " ORDER BY g.created_at DESC, g.grant_id",
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

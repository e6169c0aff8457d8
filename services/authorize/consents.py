"""Remembered consent (RFC 6749 §4.1.1 step "the authorization server … obtains an
authorization decision"; RFC 9700 §2.1 on not skipping consent silently for new scopes).

A user's approval of a client is kept in Postgres (``authorize.consents``). A later request
for the same scopes or a subset skips the consent screen; anything wider asks again, and the
new approval adds to what was remembered. Revoking deletes the row. Both write their audit
event (``consent.granted``, ``consent.revoked``, by the user) in the same statement.

:meth:`ConsentStore.standing` is on the hot path of every authorization request of a signed-in
user, so one statement answers both "is this user still allowed to sign in?" and "what has
this user already approved for this client?"; the requests that arrive while such statements
run share the next one (:mod:`services.common.batches`), each answered from its own row.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import asyncpg

from services.common import audit, db
from services.common.audit import Actor, Origin
from services.common.batches import Batches, shared_or_alone

# Statements of standing running at once in a replica; the requests that arrive meanwhile wait
# for one to end and go together in the next.
BATCHES_IN_FLIGHT = 2
MAX_BATCH = 32
_STANDING = (
    "SELECT u.email, u.disabled_at IS NOT NULL AS disabled, c.scopes"
    " FROM authorize.users u LEFT JOIN authorize.consents c"
    " ON c.user_id = u.user_id AND c.client_id = $2"
    " WHERE u.user_id = $1")
# n: each request's place in the batch.
_STANDINGS = (
    "SELECT i.n, u.email, u.disabled_at IS NOT NULL AS disabled, c.scopes"
    " FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS i(user_id, client_id, n)"
    " JOIN authorize.users u ON u.user_id = i.user_id"
    " LEFT JOIN authorize.consents c ON c.user_id = u.user_id AND c.client_id = i.client_id")


@dataclass(frozen=True)
class Standing:
    """A signed-in user as the authorization endpoint needs them."""

    email: str
    disabled: bool
    # Scopes already approved for the client; empty when none.
    granted: frozenset[str]


@dataclass(frozen=True)
class Consent:
    client_id: str
    scopes: tuple[str, ...]
    created_at: datetime
    updated_at: datetime


def _standing(row: asyncpg.Record) -> Standing:
    return Standing(email=row["email"], disabled=row["disabled"],
                    granted=frozenset(row["scopes"] or ()))


class ConsentStore(Protocol):
    async def standing(self, *, user_id: str, client_id: str) -> Standing | None: ...

    async def grant(self, *, user_id: str, client_id: str, scopes: Sequence[str],
                    origin: Origin) -> None: ...

    async def revoke(self, *, user_id: str, client_id: str, origin: Origin) -> bool: ...

    async def list_for_user(self, *, user_id: str) -> list[Consent]: ...


class PgConsentStore:
    def __init__(self, pool: db.Queries, *, batches_in_flight: int = BATCHES_IN_FLIGHT) -> None:
        self._pool = pool
        self._standings: Batches[tuple[uuid.UUID, str], Standing | None] = Batches(
            self._read, kind="standing", max_in_flight=batches_in_flight, max_size=MAX_BATCH)

    async def standing(self, *, user_id: str, client_id: str) -> Standing | None:
        """``None`` when the user no longer exists."""
        try:
            user = uuid.UUID(user_id)
        except ValueError:
            return None
        return await self._standings.submit((user, client_id))

    async def wait_idle(self) -> None:
        """Returns once no read is under way (before the pool closes)."""
        await self._standings.wait_idle()

    async def _read(self, asks: Sequence[tuple[uuid.UUID, str]],
                    ) -> Sequence[Standing | None | Exception]:
        """Each user's standing with each client (a batch's runner)."""
        return await shared_or_alone(asks, shared=self._read_together, alone=self._read_one)

    async def _read_together(self, asks: Sequence[tuple[uuid.UUID, str]],
                             ) -> list[Standing | None]:
        rows = await self._pool.fetch(_STANDINGS, [user for user, _ in asks],
                                      [client for _, client in asks])
        found = {row["n"]: _standing(row) for row in rows}
        return [found.get(n) for n in range(1, len(asks) + 1)]

    async def _read_one(self, ask: tuple[uuid.UUID, str]) -> Standing | None:
        row = await self._pool.fetchrow(_STANDING, *ask)
        return None if row is None else _standing(row)

    async def grant(self, *, user_id: str, client_id: str, scopes: Sequence[str],
                    origin: Origin) -> None:
        """Remembers ``scopes`` in addition to anything approved before."""
        approved = sorted(set(scopes))
        await self._pool.execute(
            "WITH c AS ("
            "INSERT INTO authorize.consents (user_id, client_id, scopes)"
            " VALUES ($1::text::uuid, $2, $3)"
            " ON CONFLICT (user_id, client_id) DO UPDATE SET"
            " scopes = ARRAY(SELECT DISTINCT s FROM unnest(consents.scopes || EXCLUDED.scopes) s"
            " ORDER BY s), updated_at = now()"
            " RETURNING user_id, client_id) "
            + audit.insert_from("consent.granted", first=4, rows="c", subject="user_id::text",
                                client="client_id", grant="NULL"),
            user_id, client_id, approved,
            *audit.params(Actor.user(user_id), origin, {"scope": " ".join(approved)}))
        audit.counted("consent.granted")

    async def revoke(self, *, user_id: str, client_id: str, origin: Origin) -> bool:
        result = await self._pool.execute(
            "WITH c AS ("
            "DELETE FROM authorize.consents WHERE user_id = $1::text::uuid AND client_id = $2"
            " RETURNING user_id, client_id) "
            + audit.insert_from("consent.revoked", first=3, rows="c", subject="user_id::text",
                                client="client_id", grant="NULL"),
            user_id, client_id, *audit.params(Actor.user(user_id), origin))
        revoked = result.endswith(" 1")
        audit.counted("consent.revoked", int(revoked))
        return revoked

    async def list_for_user(self, *, user_id: str) -> list[Consent]:
        rows = await self._pool.fetch(
            "SELECT client_id, scopes, created_at, updated_at FROM authorize.consents"
            " WHERE user_id = $1::text::uuid ORDER BY updated_at DESC", user_id)
        return [Consent(row["client_id"], tuple(row["scopes"]), row["created_at"],
                        row["updated_at"]) for row in rows]

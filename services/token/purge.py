"""Purging what no longer protects anything (DESIGN §6), for a CronJob: ``otesse-auth purge``.

Each kind of row goes in batches (``LIMIT`` with ``FOR UPDATE SKIP LOCKED``, one short
statement each), so purging runs beside live traffic without long locks:

* sealed retry copies once the retry window has passed (nothing may read them any more);
* refresh tokens past their expiry (rotated ones included: reuse of an expired token is
  refused anyway);
* grants dead for longer than any of their access tokens can live: revoked, or with every
  refresh token expired (a grant's own ``expires_at`` is its first token's: a rotation writes
  only refresh tokens, so a newer live one keeps the grant). Their code hashes (the only
  trace of authorization codes in Postgres; the codes themselves expire in Redis) and
  remaining refresh tokens go with them, in the statement that deletes the grant. Revoked
  grants are kept exactly as long as the deny-list rebuild needs them;
* individually revoked access tokens past their ``exp``;
* signing keys retired longer than the last token they signed can live;
* rows of the revocation log past their ``relevant_until`` (no token they cover can validate).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from services.common import db
from services.token.settings import CLOCK_SKEW_SECONDS


@dataclass(frozen=True)
class PurgeReport:
    sealed_copies: int
    refresh_tokens: int
    grants: int
    revoked_access_tokens: int
    signing_keys: int
    authorization_revocations: int
    revocation_log: int


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


class Purger:
    def __init__(self, pool: db.Queries, *, access_token_ttl: int, retry_window: int,
                 batch_size: int = 1000) -> None:
        self._pool = pool
        self._dead_after = access_token_ttl + CLOCK_SKEW_SECONDS
        self._retry_window = retry_window
        self._batch = batch_size

    async def _batches(self, statement: str, *args: object) -> int:
        total = 0
        while True:
            done = _count(await self._pool.execute(statement, self._batch, *args))
            total += done
            if done < self._batch:
                return total
            await asyncio.sleep(0)

    async def _counted_batches(self, statement: str, *args: object) -> int:
        """As :meth:`_batches`, for a statement that returns its own count."""
        total = 0
        while True:
            done: int = await self._pool.fetchval(statement, self._batch, *args)
            total += done
            if done < self._batch:
                return total
            await asyncio.sleep(0)

    async def run(self) -> PurgeReport:
        # A copy lives on the successor (found by its creation, the rotation's time, through
        # a partial index); copies an older version left on the rotated token are cleared too
        # (no index names them any more: a scan, which finds none once they are gone).
        sealed = await self._batches(
            "UPDATE token.refresh_tokens SET predecessor_sealed = NULL WHERE token_hash IN ("
            " SELECT token_hash FROM token.refresh_tokens WHERE predecessor_sealed IS NOT NULL"
            " AND created_at < now() - $2::int * interval '1 second'"
            " LIMIT $1 FOR UPDATE SKIP LOCKED)",
            self._retry_window)
        sealed += await self._batches(
            "UPDATE token.refresh_tokens SET successor_sealed = NULL WHERE token_hash IN ("
            " SELECT token_hash FROM token.refresh_tokens WHERE successor_sealed IS NOT NULL"
            " AND rotated_at < now() - $2::int * interval '1 second'"
            " LIMIT $1 FOR UPDATE SKIP LOCKED)",
            self._retry_window)
        # A grant's own expires_at is its first refresh token's (rotations do not write the
        # grant): past it, the grant is dead only if no newer refresh token is alive either.
        # Its refresh tokens go in the same statement (no foreign key does it: migration 0005).
        grants = await self._counted_batches(
            "WITH gone AS ("
            " DELETE FROM token.grants WHERE grant_id IN ("
            "  SELECT grant_id FROM token.grants g"
            "  WHERE revoked_at < now() - $2::int * interval '1 second'"
            "  OR (expires_at < now() - $2::int * interval '1 second'"
            "   AND NOT EXISTS (SELECT 1 FROM token.refresh_tokens r"
            "    WHERE r.grant_id = g.grant_id"
            "    AND r.expires_at >= now() - $2::int * interval '1 second'))"
            "  LIMIT $1 FOR UPDATE SKIP LOCKED) RETURNING grant_id),"
            " tokens AS ("
            " DELETE FROM token.refresh_tokens r USING gone WHERE r.grant_id = gone.grant_id)"
            " SELECT count(*) FROM gone",
            self._dead_after)
        refresh_tokens = await self._batches(
            "DELETE FROM token.refresh_tokens WHERE token_hash IN ("
            " SELECT token_hash FROM token.refresh_tokens WHERE expires_at < now()"
            " LIMIT $1 FOR UPDATE SKIP LOCKED)")
        revoked_access_tokens = await self._batches(
            "DELETE FROM token.revoked_access_tokens WHERE jti IN ("
            " SELECT jti FROM token.revoked_access_tokens"
            " WHERE expires_at < now() - $2::int * interval '1 second'"
            " LIMIT $1 FOR UPDATE SKIP LOCKED)",
            CLOCK_SKEW_SECONDS)
        signing_keys = await self._batches(
            "DELETE FROM token.signing_keys WHERE kid IN ("
            " SELECT kid FROM token.signing_keys WHERE state = 'previous' AND expires_at < now()"
            " LIMIT $1 FOR UPDATE SKIP LOCKED)")
        # A revocation bars codes issued before it; codes live 60 s, so a day is ample.
        authorization_revocations = await self._batches(
            "DELETE FROM token.authorization_revocations WHERE (user_id, client_id) IN ("
            " SELECT user_id, client_id FROM token.authorization_revocations"
            " WHERE revoked_at < now() - interval '1 day'"
            " LIMIT $1 FOR UPDATE SKIP LOCKED)")
        revocation_log = await self._revocation_log()
        return PurgeReport(sealed_copies=sealed, refresh_tokens=refresh_tokens, grants=grants,
                           revoked_access_tokens=revoked_access_tokens,
                           signing_keys=signing_keys,
                           authorization_revocations=authorization_revocations,
                           revocation_log=revocation_log)

    async def _revocation_log(self) -> int:
        """Rows of the revocation log past their relevance. The same statement raises the
        horizon to the highest id removed: a subscriber whose cursor is below it gets a
        snapshot rather than a tail with holes."""
        return await self._counted_batches(
            "WITH gone AS ("
            " DELETE FROM token.revocation_log WHERE id IN ("
            "  SELECT id FROM token.revocation_log"
            "  WHERE relevant_until < now() - $2::int * interval '1 second'"
            "  LIMIT $1 FOR UPDATE SKIP LOCKED) RETURNING id),"
            " horizon AS ("
            " UPDATE token.revocation_log_horizon"
            " SET purged_through = greatest(purged_through, (SELECT max(id) FROM gone))"
            " WHERE EXISTS (SELECT 1 FROM gone))"
            " SELECT count(*) FROM gone",
            CLOCK_SKEW_SECONDS)

"""``otesse-auth purge``: deletes expired refresh tokens, dead grants, revocation records and
retired signing keys nobody needs any more, and audit events older than
``OTESSE_AUDIT_RETENTION_DAYS``, in bounded batches (safe while serving; fit for a CronJob)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from typing import Any

import asyncpg

from services.cli.output import emit
from services.common.audit_retention import AuditPurger
from services.common.settings import AuditSettings, Env
from services.token.purge import Purger
from services.token.settings import TokenSettings


def _run(args: argparse.Namespace) -> int:
    settings = TokenSettings.from_env()
    retention = AuditSettings.from_env(Env())

    async def run() -> dict[str, Any]:
        pool = await asyncpg.create_pool(settings.stores.database_url.value, min_size=1,
                                         max_size=2)
        assert pool is not None
        try:
            report = await Purger(pool, access_token_ttl=settings.access_token_ttl,
                                  retry_window=settings.refresh_retry_window,
                                  batch_size=args.batch_size).run()
            audit_events = await AuditPurger(pool, retention_days=retention.retention_days,
                                             batch_size=args.batch_size).run()
            return {**dataclasses.asdict(report), "audit_events": audit_events}
        finally:
            await pool.close()

    emit(asyncio.run(run()), as_json=args.json)
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "purge", help="delete expired tokens, dead grants and keys, and old audit events")
    parser.add_argument("--batch-size", type=int, default=1000,
                        help="rows per statement (default 1000)")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(handler=_run)

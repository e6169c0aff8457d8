"""``otesse-auth purge``: deletes expired refresh tokens, dead grants, revocation records and
retired signing keys nobody needs any more, in bounded batches (safe while serving; fit for a
CronJob)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from typing import Any

import asyncpg

from services.cli.output import emit
from services.token.purge import Purger, PurgeReport
from services.token.settings import TokenSettings


def _run(args: argparse.Namespace) -> int:
    settings = TokenSettings.from_env()

    async def run() -> PurgeReport:
        pool = await asyncpg.create_pool(settings.stores.database_url.value, min_size=1,
                                         max_size=2)
        assert pool is not None
        try:
            return await Purger(pool, access_token_ttl=settings.access_token_ttl,
                                retry_window=settings.refresh_retry_window,
                                batch_size=args.batch_size).run()
        finally:
            await pool.close()

    emit(dataclasses.asdict(asyncio.run(run())), as_json=args.json)
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("purge", help="delete expired tokens, dead grants and keys")
    parser.add_argument("--batch-size", type=int, default=1000,
                        help="rows per statement (default 1000)")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(handler=_run)

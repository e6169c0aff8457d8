"""``otesse-auth keys rotate|list``: the token service's signing keys (DESIGN §3).

``rotate`` promotes the published ``next`` key to ``current``, keeps the old current key
published as ``previous`` until every token it signed has expired, and publishes a new ``next``.
It refuses while the next key is younger than the JWKS cache lifetime plus the replicas' refresh
interval (a few minutes), unless ``--force`` (a leaked key must go at once).
Running replicas pick the change up within ``OTESSE_TOKEN_KEY_REFRESH_SECONDS``; tokens signed
by the old key stay valid meanwhile and after.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from services.cli.output import emit
from services.common.audit import Actor, Origin
from services.token.keys import NextKeyTooYoung, PgKeyStore, StoredKey
from services.token.settings import TokenSettings

T = TypeVar("T")


def _with_store(settings: TokenSettings, action: Callable[[PgKeyStore], Awaitable[T]]) -> T:
    async def run() -> T:
        pool = await asyncpg.create_pool(settings.stores.database_url.value, min_size=1,
                                         max_size=2)
        assert pool is not None
        try:
            return await action(PgKeyStore(pool))
        finally:
            await pool.close()

    return asyncio.run(run())


def _row(key: StoredKey) -> dict[str, Any]:
    def when(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {"kid": key.kid, "state": key.state, "created_at": when(key.created_at),
            "activated_at": when(key.activated_at), "retired_at": when(key.retired_at),
            "expires_at": when(key.expires_at)}


def _list(args: argparse.Namespace) -> int:
    settings = TokenSettings.from_env()
    keys = _with_store(settings, lambda store: store.all())
    emit([_row(key) for key in keys], as_json=args.json)
    return 0


def _rotate(args: argparse.Namespace) -> int:
    settings = TokenSettings.from_env()

    async def rotate(store: PgKeyStore) -> list[StoredKey]:
        await store.ensure(kek=settings.kek_bytes)
        await store.rotate(kek=settings.kek_bytes,
                           retire_after_seconds=settings.key_retirement_seconds,
                           min_next_age_seconds=0.0 if args.force
                           else settings.key_publish_lead_seconds,
                           actor=Actor.operator(), origin=Origin.of(None))
        return await store.published()

    try:
        keys = _with_store(settings, rotate)
    except NextKeyTooYoung as exc:
        print(f"otesse-auth: not rotated: {exc}; use --force if the current key leaked",
              file=sys.stderr)
        return 1
    emit([_row(key) for key in keys], as_json=args.json)
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("keys", help="list or rotate the access-token signing keys")
    commands = parser.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    list_ = commands.add_parser("list", help="every signing key and its state")
    list_.add_argument("--json", action="store_true")
    list_.set_defaults(handler=_list)
    rotate = commands.add_parser("rotate", help="next → current → previous, and a new next")
    rotate.add_argument("--force", action="store_true",
                        help="promote the next key even if JWKS caches may not hold it yet"
                        " (when the current key leaked)")
    rotate.add_argument("--json", action="store_true")
    rotate.set_defaults(handler=_rotate)

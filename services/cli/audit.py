"""``otesse-auth audit``: the audit trail's security events, newest first, as a table or JSON.

Filters combine (every one given must hold): ``--user`` (events about that user: their
sign-ins, consents, grants and apps), ``--client``, ``--type``, ``--since`` / ``--until`` (an
ISO 8601 time, UTC unless it says otherwise, or a duration back from now: ``30m``, ``12h``,
``7d``), and ``--limit`` (default 100).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from services.cli.output import emit
from services.common.audit import EVENT_TYPES
from services.common.audit_search import MAX_LIMIT, AuditSearch, Filters, StoredEvent
from services.common.settings import Env, StoreSettings

_AGO = re.compile(r"(\d{1,6})([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_COLUMNS = ("time", "type", "actor", "user", "client", "grant", "ip", "request_id", "details")


def moment(text: str) -> datetime:
    """An argparse type: ``2026-05-01``, ``2026-05-01T10:00:00+02:00``, or ``7d`` ago."""
    ago = _AGO.fullmatch(text.strip())
    if ago:
        return datetime.now(UTC) - timedelta(**{_UNITS[ago.group(2)]: int(ago.group(1))})
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an ISO 8601 time nor a duration like 30m, 12h, 7d") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_LIMIT}")
    return value


def _cells(event: StoredEvent) -> list[str]:
    return [event.occurred_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"), event.type,
            event.actor_id if event.actor_kind in ("operator", "system", "anonymous")
            else f"{event.actor_kind}:{event.actor_id}",
            event.subject_user_id or "-", event.client_id or "-", event.grant_id or "-",
            event.client_ip or "-", event.request_id or "-",
            json.dumps(event.details, separators=(",", ":"), sort_keys=True)
            if event.details else "-"]


def table(events: Sequence[StoredEvent]) -> str:
    """Aligned columns, a header first; the last column (details) is not padded."""
    rows = [list(_COLUMNS)] + [_cells(event) for event in events]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS) - 1)]
    return "\n".join("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths,
                                                                          strict=False)),
                                row[-1]]).rstrip() for row in rows)


def _run(args: argparse.Namespace) -> int:
    settings = StoreSettings.from_env(Env())
    filters = Filters(user_id=args.user, client_id=args.client, event_type=args.type,
                      since=args.since, until=args.until, limit=args.limit)

    async def run() -> list[StoredEvent]:
        pool = await asyncpg.create_pool(settings.database_url.value, min_size=1, max_size=1)
        assert pool is not None
        try:
            return await AuditSearch(pool).search(filters)
        finally:
            await pool.close()

    events = asyncio.run(run())
    if args.json:
        emit([event.as_dict() for event in events], as_json=True)
    else:
        print(table(events))
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("audit", help="security events, newest first")
    parser.add_argument("--user", help="events about this user id")
    parser.add_argument("--client", help="events of this client id")
    parser.add_argument("--type", choices=EVENT_TYPES, metavar="TYPE",
                        help="one event type: " + ", ".join(EVENT_TYPES))
    parser.add_argument("--since", type=moment, help="from this time (or 30m, 12h, 7d ago)")
    parser.add_argument("--until", type=moment, help="before this time (or 30m, 12h, 7d ago)")
    parser.add_argument("--limit", type=limit, default=100,
                        help=f"at most this many events (default 100, at most {MAX_LIMIT})")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(handler=_run)

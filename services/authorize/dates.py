"""Dates and times as the settings pages show them (UTC, unambiguous day-month-year)."""

from __future__ import annotations

from datetime import UTC, datetime


def day(moment: datetime | None) -> str:
    """``29 Nov 2026``; an em dash when unknown."""
    return moment.astimezone(UTC).strftime("%-d %b %Y") if moment else "—"


def moment(value: datetime | None) -> str:
    """``29 Nov 2026, 18:40 UTC``; an em dash when unknown."""
    return value.astimezone(UTC).strftime("%-d %b %Y, %H:%M UTC") if value else "—"


def iso(value: datetime | None) -> str:
    """For ``<time datetime=…>``."""
    return value.astimezone(UTC).isoformat(timespec="seconds") if value else ""

"""Users in Postgres (schema ``authorize``). Passwords are stored only as Argon2id hashes;
emails are unique regardless of case."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import asyncpg

from services.common import db


@dataclass(frozen=True)
class User:
    user_id: str
    email: str
    password_hash: str
    disabled: bool
    created_at: datetime


class EmailTaken(Exception):
    """Another user already has this email (compared case-insensitively)."""


class UserStore(Protocol):
    async def create(self, *, email: str, password_hash: str) -> User: ...

    async def by_email(self, *, email: str) -> User | None: ...

    async def by_id(self, *, user_id: str) -> User | None: ...

    async def list(self) -> list[User]: ...

    async def set_disabled(self, *, email: str, disabled: bool) -> bool: ...


_COLUMNS = "user_id::text, email, password_hash, disabled_at IS NOT NULL AS disabled, created_at"


def _user(row: asyncpg.Record) -> User:
    return User(row["user_id"], row["email"], row["password_hash"], row["disabled"],
                row["created_at"])


class PgUserStore:
    def __init__(self, pool: db.Queries) -> None:
        self._pool = pool

    async def create(self, *, email: str, password_hash: str) -> User:
        try:
            row = await self._pool.fetchrow(
                "INSERT INTO authorize.users (email, password_hash) VALUES ($1, $2)"
                f" RETURNING {_COLUMNS}",
                email, password_hash,
            )
        except asyncpg.UniqueViolationError:
            raise EmailTaken(email) from None
        assert row is not None
        return _user(row)

    async def by_email(self, *, email: str) -> User | None:
        if "\x00" in email:  # Postgres text cannot hold NUL, so no stored email has one
            return None
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM authorize.users WHERE lower(email) = lower($1)", email)
        return _user(row) if row is not None else None

    async def by_id(self, *, user_id: str) -> User | None:
        try:
            row = await self._pool.fetchrow(
                f"SELECT {_COLUMNS} FROM authorize.users WHERE user_id = $1::text::uuid",
                user_id)
        except asyncpg.InvalidTextRepresentationError:
            return None
        return _user(row) if row is not None else None

    async def list(self) -> list[User]:
        rows = await self._pool.fetch(f"SELECT {_COLUMNS} FROM authorize.users ORDER BY created_at")
        return [_user(row) for row in rows]

    async def set_disabled(self, *, email: str, disabled: bool) -> bool:
        result = await self._pool.execute(
            "UPDATE authorize.users SET disabled_at = CASE WHEN $2 THEN now() END"
            " WHERE lower(email) = lower($1)",
            email, disabled,
        )
        return bool(result.endswith(" 1"))

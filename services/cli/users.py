"""``otesse-auth users create|list|disable``: the people who sign in to approve apps."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import asyncpg

from services.authorize import passwords
from services.authorize.users import EmailTaken, PgUserStore, User
from services.cli.output import emit
from services.common.settings import Env, StoreSettings


class UsersError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.cli_message = message


def _row(user: User) -> dict[str, Any]:
    return {"user_id": user.user_id, "email": user.email, "disabled": user.disabled,
            "created_at": user.created_at.isoformat()}


async def _with_store(action: Any) -> Any:
    settings = StoreSettings.from_env(Env())
    pool = await asyncpg.create_pool(settings.database_url.value, min_size=1, max_size=2)
    assert pool is not None
    try:
        return await action(PgUserStore(pool))
    finally:
        await pool.close()


def _create(args: argparse.Namespace) -> int:
    email = args.email.strip()
    if "@" not in email or len(email) > 254:
        raise UsersError(f"--email {email!r} is not an email address")
    if not passwords.MIN_LENGTH <= len(args.password) <= passwords.MAX_LENGTH:
        raise UsersError(f"--password must be {passwords.MIN_LENGTH}–{passwords.MAX_LENGTH} "
                         "characters")

    async def create(store: PgUserStore) -> User:
        return await store.create(email=email, password_hash=passwords.hash_password(args.password))

    try:
        user = asyncio.run(_with_store(create))
    except EmailTaken:
        raise UsersError(f"a user with email {email!r} already exists") from None
    emit(_row(user), as_json=args.json)
    return 0


def _list(args: argparse.Namespace) -> int:
    users: list[User] = asyncio.run(_with_store(lambda store: store.list()))
    emit([_row(user) for user in users], as_json=args.json)
    return 0


def _disable(args: argparse.Namespace) -> int:
    async def disable(store: PgUserStore) -> bool:
        return await store.set_disabled(email=args.email, disabled=not args.enable)

    if not asyncio.run(_with_store(disable)):
        raise UsersError(f"no user with email {args.email!r}")
    print(f"{'enabled' if args.enable else 'disabled'} {args.email}")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("users", help="manage users")
    commands = parser.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    create = commands.add_parser("create", help="create a user")
    create.add_argument("--email", required=True)
    create.add_argument("--password", required=True)
    create.add_argument("--json", action="store_true")
    create.set_defaults(handler=_create)
    list_ = commands.add_parser("list", help="list users")
    list_.add_argument("--json", action="store_true")
    list_.set_defaults(handler=_list)
    disable = commands.add_parser("disable", help="stop a user from signing in")
    disable.add_argument("--email", required=True)
    disable.add_argument("--enable", action="store_true", help="undo: let the user sign in again")
    disable.set_defaults(handler=_disable)

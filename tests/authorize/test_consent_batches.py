"""Authorization requests that arrive together read their users' standing in one statement
(services.common.batches), and each gets its own: its user's consent for its client, a
disabled user, a user who no longer exists."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from dataclasses import replace

import asyncpg
from prometheus_client import REGISTRY

from services.authorize.consents import PgConsentStore, Standing
from services.authorize.users import PgUserStore
from services.common import db
from services.common.audit import Origin
from services.common.settings import Env, Secret, StoreSettings
from services.common.unavailable import is_unavailable
from tests.conftest import free_port

ORIGIN = Origin("203.0.113.5", "req-standing")


def batches() -> tuple[float, float]:
    labels = {"kind": "standing"}
    return (REGISTRY.get_sample_value("otesse_store_batch_size_count", labels) or 0.0,
            REGISTRY.get_sample_value("otesse_store_batch_size_sum", labels) or 0.0)


async def new_user(pool: asyncpg.Pool) -> str:
    user = await PgUserStore(pool).create(email=f"standing-{secrets.token_hex(5)}@example.com",
                                          password_hash="not-a-real-hash")
    return str(user.user_id)


async def test_requests_that_arrive_together_read_in_one_statement_each_its_own_standing(
        pool: asyncpg.Pool) -> None:
    store = PgConsentStore(pool, batches_in_flight=1)
    app = f"standing-app-{secrets.token_hex(4)}"
    other_app = f"standing-other-{secrets.token_hex(4)}"
    users = [await new_user(pool) for _ in range(4)]
    await store.grant(user_id=users[0], client_id=app, scopes=["bookings:read"], origin=ORIGIN)
    await store.grant(user_id=users[1], client_id=app, scopes=["bookings:read",
                                                                 "customers:read"],
                      origin=ORIGIN)
    await store.grant(user_id=users[1], client_id=other_app, scopes=["customers:write"],
                      origin=ORIGIN)
    await PgUserStore(pool).set_disabled(email=(await pool.fetchval(
        "SELECT email FROM authorize.users WHERE user_id = $1::uuid", users[2])), disabled=True)
    asks = [
        (users[0], app),                 # alone: the first finds a place free
        (users[1], app),                 # both its scopes, not the other app's
        (users[1], other_app),
        (users[2], app),                 # disabled, no consent
        (users[3], app),                 # no consent
        (str(uuid.uuid4()), app),        # no such user
        ("not-a-user-id", app),          # never reaches Postgres
        (users[0], app),                 # the same question twice in one batch
    ]
    count, held = batches()

    answers = await asyncio.gather(*(store.standing(user_id=user, client_id=client)
                                     for user, client in asks))

    assert [None if a is None else (a.disabled, a.granted) for a in answers] == [
        (False, frozenset({"bookings:read"})),
        (False, frozenset({"bookings:read", "customers:read"})),
        (False, frozenset({"customers:write"})),
        (True, frozenset()),
        (False, frozenset()),
        None,
        None,
        (False, frozenset({"bookings:read"})),
    ]
    assert all(isinstance(a, Standing) and a.email.startswith("standing-")
               for a in answers if a is not None)
    # The first alone, the six others that reached Postgres together.
    assert batches() == (count + 2, held + 7)


async def test_every_request_of_a_batch_learns_the_database_is_down() -> None:
    settings = replace(StoreSettings.from_env(Env({})), database_url=Secret(
        f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"))
    unreachable = await db.create_pool(settings, application_name="otesse-test-standing")
    try:
        store = PgConsentStore(unreachable, batches_in_flight=1)
        outcomes = await asyncio.gather(*(store.standing(user_id=str(uuid.uuid4()),
                                                         client_id="app") for _ in range(4)),
                                        return_exceptions=True)
    finally:
        await unreachable.close()
    for outcome in outcomes:
        assert isinstance(outcome, BaseException) and is_unavailable(outcome), outcome


async def test_a_request_postgres_refuses_fails_alone(pool: asyncpg.Pool) -> None:
    store = PgConsentStore(pool, batches_in_flight=1)
    app = f"standing-app-{secrets.token_hex(4)}"
    users = [await new_user(pool) for _ in range(3)]
    await store.grant(user_id=users[1], client_id=app, scopes=["bookings:read"], origin=ORIGIN)

    # Postgres refuses a NUL in text: the shared statement fails, and each is read again alone.
    answers = await asyncio.gather(
        store.standing(user_id=users[0], client_id=app),
        store.standing(user_id=users[1], client_id=app),
        store.standing(user_id=users[2], client_id="bad\x00app"),
        return_exceptions=True)

    assert isinstance(answers[0], Standing) and answers[0].granted == frozenset()
    assert isinstance(answers[1], Standing) and answers[1].granted == {"bookings:read"}
    assert isinstance(answers[2], asyncpg.PostgresError) and not is_unavailable(answers[2])

"""The promises of the shared client cache (services/common/client_cache.py), against a real
change feed on the run's database: an announced change forgets that client's answers at once,
an answer asked for before a change is not kept, a feed that is not heard serves nothing, and
the bounds (lifetime, size) hold."""

from __future__ import annotations

import asyncio

import asyncpg

from services.common.client_cache import ClientCache
from services.common.client_changes import CHANNEL, ClientChangeFeed


async def announce(pool: asyncpg.Pool, client_id: str) -> None:
    await pool.execute("SELECT pg_notify($1, $2)", CHANNEL, client_id)


async def forgotten(cache: ClientCache[str], client_id: str, key: bytes = b"",
                    timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while cache.get(client_id, key) is not None:
        assert asyncio.get_running_loop().time() < deadline, "the change was never heard"
        await asyncio.sleep(0.01)


async def test_a_change_forgets_every_answer_about_that_client_only(
        client_changes: ClientChangeFeed, pool: asyncpg.Pool) -> None:
    cache: ClientCache[str] = ClientCache(client_changes, ttl_seconds=3600, max_entries=10)
    for key in (b"secret-a", b"secret-b"):
        cache.put("ci_changed", f"answer {key!r}", ticket=cache.ticket(), key=key)
    cache.put("ci_other", "kept", ticket=cache.ticket())
    await announce(pool, "ci_changed")
    await forgotten(cache, "ci_changed", b"secret-a")
    assert cache.get("ci_changed", b"secret-b") is None
    assert cache.get("ci_other") == ("kept",)


async def test_an_answer_asked_for_before_a_change_is_not_kept(
        client_changes: ClientChangeFeed, pool: asyncpg.Pool) -> None:
    cache: ClientCache[str] = ClientCache(client_changes, ttl_seconds=3600, max_entries=10)
    cache.put("ci_probe", "probe", ticket=cache.ticket())
    ticket = cache.ticket()  # the registry is being asked…
    await announce(pool, "ci_raced")  # …and the client changes meanwhile
    await announce(pool, "ci_probe")
    await forgotten(cache, "ci_probe")
    cache.put("ci_raced", "stale", ticket=ticket)
    assert cache.get("ci_raced") is None
    cache.put("ci_raced", "fresh", ticket=cache.ticket())
    assert cache.get("ci_raced") == ("fresh",)


async def test_an_unknown_client_is_an_answer_too(client_changes: ClientChangeFeed) -> None:
    cache: ClientCache[str | None] = ClientCache(client_changes, ttl_seconds=3600,
                                                 max_entries=10)
    cache.put("ci_made_up", None, ticket=cache.ticket())
    assert cache.get("ci_made_up") == (None,)
    assert cache.get("ci_never_asked") is None


async def test_nothing_is_served_or_kept_while_changes_cannot_be_heard(
        database_url: str) -> None:
    feed = ClientChangeFeed(database_url, application_name="otesse-test-unheard")
    cache: ClientCache[str] = ClientCache(feed, ttl_seconds=3600, max_entries=10)
    assert not feed.connected  # never started: nothing announced could be heard
    cache.put("ci_x", "answer", ticket=cache.ticket())
    assert cache.get("ci_x") is None and len(cache) == 0


async def test_answers_expire_and_the_least_recently_used_go_first(
        client_changes: ClientChangeFeed) -> None:
    short: ClientCache[str] = ClientCache(client_changes, ttl_seconds=0.05, max_entries=10)
    short.put("ci_x", "answer", ticket=short.ticket())
    assert short.get("ci_x") == ("answer",)
    await asyncio.sleep(0.1)
    assert short.get("ci_x") is None

    small: ClientCache[str] = ClientCache(client_changes, ttl_seconds=3600, max_entries=2)
    small.put("ci_a", "a", ticket=small.ticket())
    small.put("ci_b", "b", ticket=small.ticket())
    assert small.get("ci_a") == ("a",)  # ci_b is now the least recently used
    small.put("ci_c", "c", ticket=small.ticket())
    assert (small.get("ci_a"), small.get("ci_b"), small.get("ci_c")) == (("a",), None, ("c",))

    off: ClientCache[str] = ClientCache(client_changes, ttl_seconds=0, max_entries=10)
    off.put("ci_x", "answer", ticket=off.ticket())
    assert off.get("ci_x") is None

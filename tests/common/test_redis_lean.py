"""The hot paths' lean Redis client (services.common.redis_lean) against real redis-servers: its
replies, its pool, its timeouts and cancellations (a late reply is never taken for the next
command's), a Redis that goes away and comes back, scripts, passwords, databases, TLS and URLs.

Whatever restarts, pauses, flushes or sets a password on a Redis uses one of the test's own
(:class:`PrivateRedis`); on the shared Redis every key starts with a prefix of this test's."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
import redis.exceptions
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.common.redis_lean import Endpoint, ErrorReply, LeanRedis, Reply, pack, parse
from services.common.settings import ConfigError, Env, StoreSettings
from services.common.unavailable import is_unavailable
from tests.conftest import REDIS_URL, free_port
from tests.faults.stores import PrivateRedis

# A script that counts its runs: a second run of one call would show as a skipped number.
COUNT_RUNS = "return redis.call('INCR', KEYS[1])"


@contextlib.asynccontextmanager
async def lean(url: str = REDIS_URL, *, max_connections: int = 64, timeout: float = 2.0,
               ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[LeanRedis]:
    client = LeanRedis.from_url(url, max_connections=max_connections, timeout=timeout,
                                ssl_context=ssl_context)
    try:
        yield client
    finally:
        await client.aclose()


@pytest_asyncio.fixture
async def prefix() -> AsyncIterator[str]:
    """A key prefix of this test's own on the shared Redis; its keys are deleted afterwards."""
    mine = f"test-lean-{secrets.token_hex(4)}:"
    yield mine
    async with lean() as client:
        cursor = b"0"
        while True:
            reply = await client.execute("SCAN", cursor, "MATCH", f"{mine}*", "COUNT", 1000)
            assert isinstance(reply, list) and isinstance(reply[0], bytes)
            cursor, keys = reply[0], reply[1]
            if isinstance(keys, list) and keys:
                await client.execute("DEL", *(key for key in keys if isinstance(key, bytes)))
            if cursor == b"0":
                break


def private_url(server: PrivateRedis, *, auth: str = "", db: int = 0, scheme: str = "redis",
                host: str = "127.0.0.1") -> str:
    return f"{scheme}://{auth + '@' if auth else ''}{host}:{server.port}/{db}"


def info_field(info: Reply, name: str) -> int:
    """One counter of an ``INFO`` reply (``name:value``), or of ``INFO commandstats``
    (``cmdstat_x:calls=…``: ``name`` is ``cmdstat_x.calls``)."""
    assert isinstance(info, bytes)
    section, _, field = name.partition(".")
    for line in info.decode().splitlines():
        key, _, value = line.partition(":")
        if key != section:
            continue
        if not field:
            return int(value)
        return int(dict(item.split("=") for item in value.split(","))[field])
    return 0


async def connection_id(client: LeanRedis) -> int:
    """``CLIENT ID`` of a connection of ``client``: with one in its pool, the one every
    command of ``client`` takes next."""
    reply = await client.execute("CLIENT", "ID")
    assert isinstance(reply, int)
    return reply


async def closed_by_the_client(client: LeanRedis, identifier: int) -> bool:
    """Whether Redis soon sees the connection ``identifier`` (``CLIENT ID``) closed."""
    deadline = time.monotonic() + 0.3
    while await client.execute("CLIENT", "LIST", "ID", identifier) != b"":
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


# --- Commands and replies -------------------------------------------------------------------

async def test_set_answers_ok_and_get_returns_the_bytes_set(prefix: str) -> None:
    async with lean() as client:
        assert await client.execute(b"SET", f"{prefix}bytes", b"\x00\xffvalue\r\n") == b"OK"
        assert await client.execute(b"GET", f"{prefix}bytes") == b"\x00\xffvalue\r\n"
        assert await client.execute("SET", f"{prefix}text", "é ☃") == b"OK"
        assert await client.execute("GET", f"{prefix}text") == "é ☃".encode()
        assert await client.execute("SET", f"{prefix}number", -42) == b"OK"
        assert await client.execute("GET", f"{prefix}number") == b"-42"


async def test_a_missing_key_reads_as_none_and_counts_come_back_as_integers(prefix: str) -> None:
    async with lean() as client:
        assert await client.execute("GET", f"{prefix}missing") is None
        assert await client.execute("EXISTS", f"{prefix}counter") == 0
        assert await client.execute("INCR", f"{prefix}counter") == 1
        assert await client.execute("INCRBY", f"{prefix}counter", 41) == 42
        assert await client.execute("EXISTS", f"{prefix}counter", f"{prefix}missing") == 1
        assert await client.execute("DEL", f"{prefix}counter", f"{prefix}missing") == 1
        await client.ping()


async def test_mget_returns_a_list_with_none_for_the_missing_key(prefix: str) -> None:
    async with lean() as client:
        await client.execute("SET", f"{prefix}a", b"1")
        await client.execute("SET", f"{prefix}c", b"")
        assert await client.execute("MGET", f"{prefix}a", f"{prefix}b", f"{prefix}c") == [
            b"1", None, b""]


async def test_an_error_reply_raises_response_error_and_the_client_keeps_working(
        prefix: str) -> None:
    async with lean(max_connections=1) as client:
        await client.execute("SET", f"{prefix}word", b"not a number")
        with pytest.raises(redis.exceptions.ResponseError, match="not an integer"):
            await client.execute("INCR", f"{prefix}word")
        assert await client.execute("GET", f"{prefix}word") == b"not a number"
        with pytest.raises(redis.exceptions.NoScriptError):
            await client.execute("EVALSHA", "0" * 40, 0)
        assert await client.execute("INCR", f"{prefix}n") == 1


async def test_a_replicas_refusal_to_write_raises_read_only_error(
        private_redis: PrivateRedis) -> None:
    async with lean(private_redis.url) as client:
        await client.execute("REPLICAOF", "127.0.0.1", free_port())  # a primary never reached
        with pytest.raises(redis.exceptions.ReadOnlyError):
            await client.execute("SET", "key", b"v")
        assert not is_unavailable(redis.exceptions.ReadOnlyError("READONLY"))


async def test_a_one_mebibyte_value_arrives_whole(prefix: str) -> None:
    value = secrets.token_bytes(1024 * 1024)
    async with lean(max_connections=1) as client:
        await client.execute("SET", f"{prefix}big", value)
        assert await client.execute("GET", f"{prefix}big") == value
        assert await client.execute("MGET", f"{prefix}big", f"{prefix}none", f"{prefix}big") == [
            value, None, value]
        assert await client.execute("STRLEN", f"{prefix}big") == len(value)


def test_pack_sends_every_argument_as_a_bulk_string_of_its_utf8_bytes() -> None:
    assert pack([b"SET", "k", 5]) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n5\r\n"
    assert pack(["é", b"", -1]) == b"*3\r\n$2\r\n\xc3\xa9\r\n$0\r\n\r\n$2\r\n-1\r\n"
    # A float as redis-py sends it: its shortest repr, which Lua's tonumber reads back exactly.
    assert pack([1 / 3, 2.0]) == b"*2\r\n$18\r\n0.3333333333333333\r\n$3\r\n2.0\r\n"


# --- parse ----------------------------------------------------------------------------------

# Every reply type, alone and nested, with what it reads as.
REPLIES: list[tuple[bytes, object]] = [
    (b"$5\r\nhello\r\n", b"hello"),
    (b"$0\r\n\r\n", b""),
    (b"$4\r\na\r\nb\r\n", b"a\r\nb"),
    (b"$-1\r\n", None),
    (b"*2\r\n$1\r\na\r\n$2\r\nbc\r\n", [b"a", b"bc"]),
    (b"*0\r\n", []),
    (b"*-1\r\n", None),
    (b":1234\r\n", 1234),
    (b":-7\r\n", -7),
    (b"+OK\r\n", b"OK"),
    (b"-ERR wrong type\r\n", "ERR wrong type"),
    (b"*6\r\n$5\r\nhello\r\n*3\r\n$1\r\na\r\n$-1\r\n*-1\r\n:42\r\n+QUEUED\r\n-NOSCRIPT x\r\n"
     b"*0\r\n", [b"hello", [b"a", None, None], 42, b"QUEUED", "NOSCRIPT x", []]),
]


def plain(reply: object) -> object:
    """A parsed reply with each error reply as its message, to compare with REPLIES."""
    if isinstance(reply, ErrorReply):
        return reply.message
    if isinstance(reply, list):
        return [plain(item) for item in reply]
    return reply


@pytest.mark.parametrize(("wire", "expected"), REPLIES)
def test_parse_reads_a_whole_reply_and_where_it_ends(wire: bytes, expected: object) -> None:
    parsed = parse(wire)
    assert parsed is not None
    reply, end = parsed
    assert plain(reply) == expected
    assert end == len(wire)
    # From an offset, and with the next reply's bytes behind it.
    parsed = parse(b"xyz" + wire + b"+next\r\n", 3)
    assert parsed is not None
    assert (plain(parsed[0]), parsed[1]) == (expected, 3 + len(wire))


@pytest.mark.parametrize(("wire", "expected"), REPLIES)
def test_parse_returns_none_for_every_part_of_a_reply(wire: bytes, expected: object) -> None:
    for cut in range(len(wire)):
        assert parse(wire[:cut]) is None, wire[:cut]
        assert parse(b"+x\r\n" + wire[:cut], 4) is None, wire[:cut]


def test_an_error_reply_becomes_redis_pys_class_for_it() -> None:
    def raised(message: str) -> type[Exception]:
        return type(ErrorReply(message).exception())

    assert raised("ERR wrong number of arguments") is redis.exceptions.ResponseError
    assert raised("NOSCRIPT No matching script") is redis.exceptions.NoScriptError
    assert raised("LOADING Redis is loading the dataset") is redis.exceptions.BusyLoadingError
    assert raised("READONLY You can't write") is redis.exceptions.ReadOnlyError
    assert raised("NOAUTH Authentication required.") is redis.exceptions.AuthenticationError
    assert raised("WRONGPASS invalid username-password pair") is \
        redis.exceptions.AuthenticationError
    assert is_unavailable(ErrorReply("LOADING Redis is loading").exception())


def test_parse_rejects_an_unknown_type_byte_and_a_malformed_length() -> None:
    with pytest.raises(ValueError, match="type byte"):
        parse(b"?5\r\nhello\r\n")
    with pytest.raises(ValueError, match="type byte"):
        parse(b"*1\r\n!x\r\n")
    with pytest.raises(ValueError):
        parse(b"$five\r\nhello\r\n")
    with pytest.raises(ValueError):
        parse(b"*x\r\n")


# --- The pool -------------------------------------------------------------------------------

async def test_two_hundred_concurrent_commands_on_four_connections_each_get_their_own_reply(
        prefix: str) -> None:
    count = 200
    async with lean(max_connections=4) as client:
        totals = await asyncio.gather(
            *(client.execute("INCRBY", f"{prefix}n{i}", i + 1) for i in range(count)))
        assert totals == [i + 1 for i in range(count)]
        # Values of many sizes, some split over several reads, each read back by its own GET.
        values = [f"{i}:".encode() + secrets.token_bytes(i * 97) for i in range(count)]

        async def set_then_get(i: int) -> Reply:
            assert await client.execute("SET", f"{prefix}v{i}", values[i]) == b"OK"
            return await client.execute("GET", f"{prefix}v{i}")

        assert await asyncio.gather(*(set_then_get(i) for i in range(count))) == values


async def test_the_pool_opens_no_more_than_max_connections(private_redis: PrivateRedis) -> None:
    async with lean(private_redis.url) as admin:
        await admin.execute("CONFIG", "RESETSTAT")  # forgets the start-up's readiness probes
    async with lean(private_redis.url, max_connections=4) as client:
        await asyncio.gather(*(client.execute("INCR", "n") for _ in range(200)))
        assert await client.execute("GET", "n") == b"200"
        opened = info_field(await client.execute("INFO", "stats"), "total_connections_received")
        assert 1 <= opened <= 4, opened


async def test_a_command_waits_for_a_free_connection_when_all_are_busy(prefix: str) -> None:
    async with lean(max_connections=1) as client:
        await client.execute("SET", f"{prefix}key", b"value")
        started = time.monotonic()
        blocked = asyncio.create_task(client.execute("BLPOP", f"{prefix}list", "0.3"))
        await asyncio.sleep(0.05)
        assert await client.execute("GET", f"{prefix}key") == b"value"
        assert time.monotonic() - started >= 0.25  # after the BLPOP, not beside it
        assert blocked.done() and blocked.result() is None


async def test_a_connection_idle_too_long_is_replaced_rather_than_trusted() -> None:
    client = LeanRedis(Endpoint.from_url(REDIS_URL), idle_seconds=0.2)
    try:
        first = await connection_id(client)
        assert await connection_id(client) == first  # pooled and reused
        await asyncio.sleep(0.3)
        assert await connection_id(client) != first
    finally:
        await client.aclose()


async def test_a_reply_out_of_turn_closes_the_connection(prefix: str) -> None:
    channel = f"{prefix}channel"
    async with lean(max_connections=1) as client, lean() as publisher:
        await client.execute("SET", f"{prefix}key", b"value")
        # A subscribed connection goes back to the pool; a message then arrives on it unasked.
        assert await client.execute("SUBSCRIBE", channel) == [b"subscribe", channel.encode(), 1]
        assert await publisher.execute("PUBLISH", channel, b"unasked") == 1
        await asyncio.sleep(0.1)
        assert await client.execute("GET", f"{prefix}key") == b"value"


# --- Timeouts and cancellations -------------------------------------------------------------

async def test_a_paused_redis_times_out_and_the_next_command_gets_its_own_reply(
        private_redis: PrivateRedis) -> None:
    async with lean(private_redis.url, max_connections=1, timeout=0.2) as client:
        await client.execute("SET", "first", b"first value")
        await client.execute("SET", "second", b"second value")
        private_redis.pause()
        try:
            started = time.monotonic()
            with pytest.raises(redis.exceptions.TimeoutError) as caught:
                await client.execute("GET", "first")
            assert time.monotonic() - started < 1.0
            assert is_unavailable(caught.value)
        finally:
            private_redis.resume()
        assert await client.execute("GET", "second") == b"second value"
        assert await client.execute("GET", "first") == b"first value"


async def test_a_late_reply_is_never_taken_for_the_next_commands(prefix: str) -> None:
    async with lean(max_connections=1, timeout=0.2) as client:
        await client.execute("SET", f"{prefix}key", b"value")
        blpop_connection = await connection_id(client)
        started = time.monotonic()
        with pytest.raises(redis.exceptions.TimeoutError) as caught:
            await client.execute("BLPOP", f"{prefix}list", 1)
        assert time.monotonic() - started < 0.6
        assert is_unavailable(caught.value)
        # On the BLPOP's connection this would wait for the BLPOP's nil, then read it as its own.
        assert await client.execute("GET", f"{prefix}key") == b"value"
        assert await connection_id(client) != blpop_connection
        # Closed at once, not left open until its late reply arrives.
        assert await closed_by_the_client(client, blpop_connection)


async def test_a_cancelled_commands_connection_is_closed_not_used_again(prefix: str) -> None:
    async with lean(max_connections=1) as client:
        await client.execute("SET", f"{prefix}key", b"value")
        blpop_connection = await connection_id(client)
        blocked = asyncio.create_task(client.execute("BLPOP", f"{prefix}list", "0.5"))
        await asyncio.sleep(0.05)
        blocked.cancel()
        with pytest.raises(asyncio.CancelledError):
            await blocked
        started = time.monotonic()
        assert await client.execute("GET", f"{prefix}key") == b"value"
        assert time.monotonic() - started < 0.3
        assert await closed_by_the_client(client, blpop_connection)


async def test_a_command_whose_connection_breaks_is_not_sent_again(prefix: str) -> None:
    async with lean(max_connections=1) as client, lean() as admin:
        blpop_connection = await connection_id(client)
        blocked = asyncio.create_task(client.execute("BLPOP", f"{prefix}list", 2))
        await asyncio.sleep(0.05)
        assert await admin.execute("CLIENT", "KILL", "ID", blpop_connection) == 1
        with pytest.raises(redis.exceptions.ConnectionError) as caught:
            await asyncio.wait_for(blocked, 0.5)
        assert is_unavailable(caught.value)
        # A BLPOP sent again would take this item.
        assert await admin.execute("RPUSH", f"{prefix}list", b"item") == 1
        await asyncio.sleep(0.05)
        assert await admin.execute("LRANGE", f"{prefix}list", 0, -1) == [b"item"]
        assert await client.execute("LPOP", f"{prefix}list") == b"item"


# Counts its run, then keeps Redis busy for 0.5 s: longer than the client below waits.
SLOW_SCRIPT = """
    local count = redis.call('INCR', KEYS[1])
    local start = redis.call('TIME')
    repeat
        local now = redis.call('TIME')
    until (now[1] - start[1]) * 1000000 + (now[2] - start[2]) >= 500000
    return count
"""


async def test_a_command_that_times_out_is_not_sent_again(private_redis: PrivateRedis) -> None:
    async with lean(private_redis.url, max_connections=1, timeout=0.2) as client:
        slow = client.script(SLOW_SCRIPT)
        await client.execute("SCRIPT", "LOAD", SLOW_SCRIPT)  # EVALSHA is what times out
        with pytest.raises(redis.exceptions.TimeoutError):
            await slow(["runs"], [])
    async with lean(private_redis.url) as check:
        assert await check.execute("GET", "runs") == b"1"  # answered once the script is done
        await asyncio.sleep(0.3)
        assert await check.execute("GET", "runs") == b"1"


# --- Redis down and back --------------------------------------------------------------------

async def test_a_redis_that_is_down_is_unavailable_and_used_again_once_back(
        private_redis: PrivateRedis) -> None:
    async with lean(private_redis.url) as client:
        await client.execute("SET", "key", b"v")
        private_redis.kill()
        await asyncio.sleep(0.05)
        for _ in range(2):  # the pooled connection, then a new one refused
            with pytest.raises(redis.exceptions.ConnectionError) as caught:
                await client.execute("GET", "key")
            assert is_unavailable(caught.value)
        with pytest.raises(redis.exceptions.ConnectionError):
            await client.ping()
        private_redis.start()  # the same port, no keys
        assert await client.execute("GET", "key") is None
        assert await client.execute("SET", "key", b"again") == b"OK"
        assert await client.execute("GET", "key") == b"again"


async def test_a_refused_connection_names_host_and_port_never_the_password() -> None:
    port = free_port()  # nothing listens there
    async with lean(f"redis://user:pa55word@127.0.0.1:{port}/0") as client:
        with pytest.raises(redis.exceptions.ConnectionError) as caught:
            await client.execute("GET", "key")
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert "pa55word" not in str(caught.value)
    assert is_unavailable(caught.value)


async def test_connections_pooled_before_a_restart_are_dropped_not_used(
        private_redis: PrivateRedis) -> None:
    count = 8
    async with lean(private_redis.url) as client:
        # Several connections at once, each pooled afterwards.
        await asyncio.gather(*(client.execute("BLPOP", f"list{i}", "0.05") for i in range(count)))
        private_redis.kill()
        private_redis.start()
        await asyncio.sleep(0.2)  # the old server's closes have reached this process
        results = await asyncio.gather(
            *(client.execute("INCR", f"key{i}") for i in range(count)), return_exceptions=True)
        assert results == [1] * count


# --- Scripts --------------------------------------------------------------------------------

async def test_a_script_runs_by_its_sha_and_is_sent_whole_only_when_redis_lacks_it(
        private_redis: PrivateRedis) -> None:
    sha = hashlib.sha1(COUNT_RUNS.encode()).hexdigest()
    async with lean(private_redis.url) as client:
        count_runs = client.script(COUNT_RUNS)
        assert await count_runs(["runs"], []) == 1  # unknown: EVALSHA, then EVAL
        assert await client.execute("SCRIPT", "EXISTS", sha) == [1]
        assert await count_runs(["runs"], []) == 2  # EVALSHA alone
        stats = await client.execute("INFO", "commandstats")
        assert info_field(stats, "cmdstat_evalsha.calls") == 2
        assert info_field(stats, "cmdstat_eval.calls") == 1


async def test_a_script_flushed_from_redis_runs_exactly_once_on_its_next_call(
        private_redis: PrivateRedis) -> None:
    async with lean(private_redis.url) as client:
        count_runs = client.script(COUNT_RUNS)
        assert await count_runs(["runs"], []) == 1
        assert await count_runs(["runs"], []) == 2
        assert await client.execute("SCRIPT", "FLUSH") == b"OK"
        assert await count_runs(["runs"], []) == 3  # NOSCRIPT did not run it; EVAL did, once
        assert await count_runs(["runs"], []) == 4
        assert await client.execute("GET", "runs") == b"4"


async def test_a_script_that_fails_is_not_sent_again(private_redis: PrivateRedis) -> None:
    async with lean(private_redis.url) as client:
        failing = client.script(
            "redis.call('INCR', KEYS[1]); return redis.error_reply('ERR failed on purpose')")
        for runs in (b"1", b"2"):  # unknown to Redis (EVALSHA, EVAL), then known (EVALSHA)
            with pytest.raises(redis.exceptions.ResponseError, match="failed on purpose"):
                await failing(["runs"], [])
            assert await client.execute("GET", "runs") == runs


async def test_a_script_with_keys_and_arguments_of_every_kind(prefix: str) -> None:
    async with lean() as client:
        echo = client.script("return {KEYS[1], ARGV[1], ARGV[2], ARGV[3]}")
        assert await echo([f"{prefix}k"], [b"\x00b", "é", 7]) == [
            f"{prefix}k".encode(), b"\x00b", "é".encode(), b"7"]


# --- Passwords and databases ----------------------------------------------------------------

@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path, ["--requirepass", "pw-0ne"])
    server.start()
    try:
        yield server
    finally:
        server.kill()


async def test_a_password_and_a_database_number_in_the_url_are_used(
        password_redis: PrivateRedis) -> None:
    async with lean(private_url(password_redis, auth=":pw-0ne", db=2)) as db2, \
            lean(private_url(password_redis, auth=":pw-0ne", db=0)) as db0:
        assert await db2.execute("SET", "key", b"in two") == b"OK"
        assert await db2.execute("GET", "key") == b"in two"
        assert await db0.execute("GET", "key") is None
        assert await db0.execute("DBSIZE") == 0
        assert await db0.execute("SELECT", 2) == b"OK"
        assert await db0.execute("GET", "key") == b"in two"


async def test_a_wrong_or_missing_password_is_an_authentication_error_meaning_unavailable(
        password_redis: PrivateRedis) -> None:
    async with lean(private_url(password_redis, auth=":wr0ng-pw")) as client:
        with pytest.raises(redis.exceptions.AuthenticationError) as wrong:
            await client.execute("GET", "key")
    assert is_unavailable(wrong.value)
    assert "wr0ng-pw" not in str(wrong.value)
    async with lean(private_url(password_redis)) as client:
        with pytest.raises(redis.exceptions.AuthenticationError) as missing:
            await client.execute("GET", "key")
    assert is_unavailable(missing.value)


async def test_a_database_that_does_not_exist_is_a_connection_failure(
        password_redis: PrivateRedis) -> None:
    async with lean(private_url(password_redis, auth=":pw-0ne", db=99)) as client:
        with pytest.raises(redis.exceptions.ConnectionError) as caught:
            await client.execute("GET", "key")
    assert is_unavailable(caught.value)
    assert "pw-0ne" not in str(caught.value)


async def test_a_percent_encoded_password_with_at_and_percent_signs_works(
        tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path, ["--requirepass", "p@ss%word:/?"])
    server.start()
    try:
        async with lean(private_url(server, auth=":p%40ss%25word%3A%2F%3F")) as client:
            assert await client.execute("SET", "key", b"v") == b"OK"
            assert await client.execute("GET", "key") == b"v"
    finally:
        server.kill()


async def test_a_user_name_and_password_authenticate_as_that_acl_user(
        password_redis: PrivateRedis) -> None:
    async with lean(private_url(password_redis, auth=":pw-0ne")) as admin:
        assert await admin.execute("ACL", "SETUSER", "alice", "on", ">alice-pw", "~*",
                                   "+@all") == b"OK"
        assert await admin.execute("ACL", "WHOAMI") == b"default"
    async with lean(private_url(password_redis, auth="alice:alice-pw", db=1)) as alice:
        assert await alice.execute("ACL", "WHOAMI") == b"alice"
        assert await alice.execute("SET", "key", b"hers") == b"OK"
    async with lean(private_url(password_redis, auth="alice:pw-0ne")) as wrong:
        with pytest.raises(redis.exceptions.AuthenticationError):
            await wrong.execute("GET", "key")


# --- TLS ------------------------------------------------------------------------------------

def write_pki(directory: Path) -> None:
    """A CA and a server certificate it signed, for the name ``localhost`` only."""
    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject: x509.Name, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
                    signer: ec.EllipticCurvePrivateKey, *, ca: bool) -> x509.Certificate:
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=1))
                   .not_valid_after(now + datetime.timedelta(hours=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(
                       digital_signature=not ca, content_commitment=False, key_encipherment=False,
                       data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                       crl_sign=ca, encipher_only=False, decipher_only=False), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                                  critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       signer.public_key()), critical=False))
        if not ca:
            builder = (builder
                       .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]),
                                      critical=False)
                       .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                                      critical=False))
        return builder.sign(signer, hashes.SHA256())

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), \
        ec.generate_private_key(ec.SECP256R1())
    ca = certificate(name("test-lean CA"), ca_key, name("test-lean CA"), ca_key, ca=True)
    server = certificate(name("localhost"), server_key, name("test-lean CA"), ca_key, ca=False)
    for file, cert in (("ca.pem", ca), ("server.pem", server)):
        (directory / file).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "server.key").write_bytes(server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A redis-server that speaks only TLS, on :attr:`PrivateRedis.port`."""
    pki = tmp_path / "pki"
    pki.mkdir()
    write_pki(pki)
    server = PrivateRedis(tmp_path / "redis")
    server.extra_args = ("--port", "0", "--tls-port", str(server.port),
                         "--tls-cert-file", str(pki / "server.pem"),
                         "--tls-key-file", str(pki / "server.key"),
                         "--tls-ca-cert-file", str(pki / "ca.pem"), "--tls-auth-clients", "no")
    server.start()
    try:
        yield server
    finally:
        server.kill()


def trusting(tls_redis: PrivateRedis) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tls_redis.root.parent / "pki" / "ca.pem"))


async def test_rediss_talks_tls_to_a_server_whose_ca_it_trusts(tls_redis: PrivateRedis) -> None:
    url = private_url(tls_redis, scheme="rediss", host="localhost")
    async with lean(url, ssl_context=trusting(tls_redis)) as client:
        assert await client.execute("SET", "key", b"over tls") == b"OK"
        assert await client.execute("GET", "key") == b"over tls"
        big = secrets.token_bytes(256 * 1024)
        await client.execute("SET", "big", big)
        assert await client.execute("GET", "big") == big


async def test_rediss_with_the_systems_cas_refuses_an_untrusted_certificate(
        tls_redis: PrivateRedis) -> None:
    async with lean(private_url(tls_redis, scheme="rediss", host="localhost")) as client:
        started = time.monotonic()
        with pytest.raises(redis.exceptions.ConnectionError) as caught:
            await client.execute("GET", "key")
        assert time.monotonic() - started < 1.5
    assert is_unavailable(caught.value)


async def test_rediss_checks_the_host_name_against_the_certificate(
        tls_redis: PrivateRedis) -> None:
    # The certificate names localhost, not 127.0.0.1: trusted, but not for that name.
    url = private_url(tls_redis, scheme="rediss", host="127.0.0.1")
    async with lean(url, ssl_context=trusting(tls_redis)) as client:
        with pytest.raises(redis.exceptions.ConnectionError):
            await client.execute("GET", "key")


async def test_plain_redis_gets_no_answer_from_a_tls_server(tls_redis: PrivateRedis) -> None:
    async with lean(private_url(tls_redis, host="localhost"), timeout=0.3) as client:
        with pytest.raises((redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
            await client.execute("GET", "key")


# --- URLs -----------------------------------------------------------------------------------

def test_endpoint_reads_host_port_database_user_password_and_tls() -> None:
    assert Endpoint.from_url("redis://h") == Endpoint(
        host="h", port=6379, db=0, username=None, password=None, tls=False)
    assert Endpoint.from_url("redis://h:1/3") == Endpoint(
        host="h", port=1, db=3, username=None, password=None, tls=False)
    assert Endpoint.from_url("rediss://u:p@h:6380/0") == Endpoint(
        host="h", port=6380, db=0, username="u", password="p", tls=True)
    assert Endpoint.from_url("redis://:p%40%25@h/") == Endpoint(
        host="h", port=6379, db=0, username=None, password="p@%", tls=False)
    assert Endpoint.from_url("redis://[::1]:7000/1").host == "::1"


@pytest.mark.parametrize("url", [
    "http://h", "h:6379", "redis://h/?ssl_cert_reqs=none", "redis://h/0#fragment",
    "redis://h/abc", "redis://h/-1", "unix:///tmp/r.sock", "redis:///0", "redis://h:99999",
    "redis://h:port/0",
])
def test_endpoint_rejects_a_url_it_cannot_honour(url: str) -> None:
    with pytest.raises(ValueError):
        Endpoint.from_url(url)
    with pytest.raises(ValueError):
        LeanRedis.from_url(url)


def test_a_bad_redis_url_setting_names_the_variable_never_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        StoreSettings.from_env(Env({"OTESSE_REDIS_URL": "redis://:s3cret@h/x"}))
    assert "OTESSE_REDIS_URL" in str(caught.value)
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize("url", [
    "redis://:s3cret\uff03@h/0",  # a fullwidth number sign, # under NFKC normalisation
    "redis://user:s3cret\u2100@h/0",  # ℀, a/c under NFKC normalisation
])
def test_a_url_error_never_shows_a_non_ascii_password(url: str) -> None:
    with pytest.raises(ValueError) as rejected:
        Endpoint.from_url(url)
    assert "s3cret" not in str(rejected.value)
    with pytest.raises(ConfigError) as caught:
        StoreSettings.from_env(Env({"OTESSE_REDIS_URL": url}))
    assert "OTESSE_REDIS_URL" in str(caught.value)
    assert "s3cret" not in str(caught.value)


# --- Closing --------------------------------------------------------------------------------

async def test_after_aclose_commands_raise_connection_error(prefix: str) -> None:
    client = LeanRedis.from_url(REDIS_URL)
    assert await client.execute("SET", f"{prefix}key", b"v") == b"OK"
    in_flight = asyncio.create_task(client.execute("BLPOP", f"{prefix}list", 2))
    await asyncio.sleep(0.05)
    await client.aclose()
    with pytest.raises(redis.exceptions.ConnectionError):
        await in_flight
    with pytest.raises(redis.exceptions.ConnectionError):
        await client.execute("GET", f"{prefix}key")
    assert is_unavailable(redis.exceptions.ConnectionError())

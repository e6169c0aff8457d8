"""The token buckets every service shares, against the real Redis: atomic check-and-take,
buckets that are only checked, keys per service that always expire, and the limit's syntax."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from prometheus_client import REGISTRY, Counter

from services.common.ratelimit import Bucket, RateLimit, RateLimiter
from services.common.redis_lean import LeanRedis
from services.common.settings import ConfigError, Env, StoreSettings
from tests.conftest import REDIS_URL

LIMITED = Counter("otesse_test_rate_limited_total", "Test.", ["limit"])
FAILED_OPEN = Counter("otesse_test_rate_limit_fail_open_total", "Test.")


def unchecked() -> float:
    return REGISTRY.get_sample_value("otesse_test_rate_limit_fail_open_total") or 0.0


@pytest_asyncio.fixture
async def client() -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(REDIS_URL)
    yield redis
    await redis.aclose()


def limiter(redis: LeanRedis, prefix: str, service: str = "test") -> RateLimiter:
    return RateLimiter(redis, prefix=prefix, service=service, timeout=5.0, limited=LIMITED,
                       failed_open=FAILED_OPEN)


@pytest.fixture
def prefix(redis_prefix: str) -> str:
    return f"{redis_prefix}rl{secrets.token_hex(4)}:"


async def test_concurrent_requests_never_exceed_the_limit(lean_redis: LeanRedis,
                                                          prefix: str) -> None:
    """The check-and-take is atomic: 50 simultaneous requests on a 10-request bucket → 10."""
    buckets = [Bucket("token_ip", "198.51.100.9", RateLimit(10, 3600))]
    decisions = await asyncio.gather(*(limiter(lean_redis, prefix).take(buckets)
                                       for _ in range(50)))
    assert sum(d.allowed for d in decisions) == 10
    assert {d.limit for d in decisions if not d.allowed} == {"token_ip"}


async def test_a_denied_request_takes_from_no_bucket(lean_redis: LeanRedis, prefix: str) -> None:
    limits = limiter(lean_redis, prefix)
    per_ip = Bucket("token_ip", "198.51.100.10", RateLimit(2, 3600))
    per_client = Bucket("token_client", "otesse_ci_x", RateLimit(1, 3600))
    assert (await limits.take([per_ip, per_client])).allowed
    denied = await limits.take([per_ip, per_client])
    # The client's bucket was empty, so the IP's second request is still there.
    assert (await limits.take([per_ip])).allowed
    assert (denied.allowed, denied.limit) == (False, "token_client")


async def test_a_checked_bucket_refuses_when_empty_and_is_never_taken_from(
        lean_redis: LeanRedis, client: aioredis.Redis, prefix: str) -> None:
    limits = limiter(lean_redis, prefix)
    failures = RateLimit(2, 3600)
    checked = Bucket("client_auth_failures_ip", "198.51.100.11", failures, take=False)
    per_ip = Bucket("token_ip", "198.51.100.11", RateLimit(100, 3600))
    # Checking takes nothing, however often.
    assert all([(await limits.take([per_ip, checked])).allowed for _ in range(5)])
    # Two failures charged: the address is refused, and the other bucket keeps its requests.
    for _ in range(2):
        assert (await limits.take([Bucket("client_auth_failures_ip", "198.51.100.11",
                                          failures)])).allowed
    denied = await limits.take([per_ip, checked])
    assert (denied.allowed, denied.limit) == (False, "client_auth_failures_ip")
    assert denied.retry_after > 0
    [key] = [k async for k in client.scan_iter(match=f"{prefix}test:rate:token_ip:*")]
    tokens = await client.hget(key, "tokens")
    assert tokens is not None and float(tokens) == pytest.approx(95, abs=0.1)


async def test_keys_are_per_service_hashed_and_always_expire(
        lean_redis: LeanRedis, client: aioredis.Redis, prefix: str) -> None:
    subject = "otesse_ci_" + "x" * 500
    await limiter(lean_redis, prefix, "token").take([Bucket("token_client", subject,
                                                        RateLimit(600, 60))])
    await limiter(lean_redis, prefix, "gateway").take([Bucket("token_ip", "192.0.2.1",
                                                          RateLimit(30, 60))])
    keys = sorted([key.decode() async for key in client.scan_iter(match=f"{prefix}*")])
    assert [key.removeprefix(prefix).rsplit(":", 1)[0] for key in keys] == [
        "gateway:rate:token_ip", "token:rate:token_client"]
    # Attacker-chosen subjects never reach a key: a fixed-length digest does.
    assert all(len(key.rsplit(":", 1)[1]) == 32 for key in keys)
    for key in keys:
        assert 0 < await client.pttl(key) <= 61_000


async def test_an_answer_that_is_not_the_scripts_fails_open_and_is_counted(
        prefix: str) -> None:
    """Whatever sits at Redis' address, a reply the script cannot give lets the request through,
    counted as unchecked, and is not taken for a refusal."""
    writers: list[asyncio.StreamWriter] = []

    async def answer_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        while await reader.read(65536):
            writer.write(b"+OK\r\n")

    server = await asyncio.start_server(answer_ok, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    odd = LeanRedis.from_url(f"redis://127.0.0.1:{port}/0")
    before = unchecked()
    try:
        decision = await limiter(odd, prefix).take(
            [Bucket("token_ip", "198.51.100.12", RateLimit(1, 3600))])
    finally:
        await odd.aclose()
        server.close()
        for writer in writers:
            writer.transport.abort()
    assert decision.allowed
    assert unchecked() - before == 1


@pytest.mark.parametrize(("raw", "expected"), [
    ("30/60", RateLimit(30, 60.0)),
    ("5", RateLimit(5, 60.0)),
    ("1/0.5", RateLimit(1, 0.5)),
    ("off", None),
    ("0", None),
], ids=["count-per-seconds", "count-per-minute", "fractional-window", "off", "zero"])
def test_limit_syntax(raw: str, expected: RateLimit | None) -> None:
    assert RateLimit.parse("OTESSE_X", raw) == expected


@pytest.mark.parametrize("raw", ["lots", "10/0", "-1/60", "1/x"],
                         ids=["fails because not a number", "fails because the window is zero",
                              "fails because the count is negative",
                              "fails because the window is not a number"])
def test_malformed_limits_name_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match="OTESSE_X must be COUNT/SECONDS"):
        RateLimit.parse("OTESSE_X", raw)


def test_the_rate_limits_use_the_shared_redis_unless_given_their_own() -> None:
    shared = StoreSettings.from_env(Env({"OTESSE_REDIS_URL": "redis://a:6379/0"}))
    assert shared.rate_limit_redis_url is None
    assert shared.rate_limit_redis == shared.redis_url
    same = StoreSettings.from_env(Env({"OTESSE_REDIS_URL": "redis://a:6379/0",
                                       "OTESSE_RATE_LIMIT_REDIS_URL": "redis://a:6379/0"}))
    assert same.rate_limit_redis_url is None
    own = StoreSettings.from_env(Env({"OTESSE_REDIS_URL": "redis://a:6379/0",
                                      "OTESSE_RATE_LIMIT_REDIS_URL": "redis://:pw7@b:6380/1"}))
    assert own.rate_limit_redis.value == "redis://:pw7@b:6380/1"
    assert own.redis_url.value == "redis://a:6379/0"
    assert "pw7" not in repr(own)


def test_a_bad_rate_limit_redis_url_names_its_variable_never_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        StoreSettings.from_env(Env({"OTESSE_RATE_LIMIT_REDIS_URL": "redis://:s3cret@h/x"}))
    assert "OTESSE_RATE_LIMIT_REDIS_URL" in str(caught.value)
    assert "s3cret" not in str(caught.value)

"""Token settings: documented defaults, and a malformed value stops start-up naming it."""

from __future__ import annotations

import base64

import pytest

from services.common.ratelimit import RateLimit
from services.common.settings import ConfigError, Env
from services.token.settings import DEV_KEK, TokenSettings


def test_defaults() -> None:
    settings = TokenSettings.from_env(Env({}))
    assert (settings.http_host, settings.http_port) == ("127.0.0.1", 8002)
    assert (settings.grpc_host, settings.grpc_port) == ("127.0.0.1", 50052)
    assert settings.issuer == "http://localhost:8000"
    assert settings.audience == "https://api.otesse.com"
    assert settings.access_token_ttl == 3600
    assert settings.refresh_token_ttl == 30 * 24 * 3600
    assert settings.refresh_retry_window == 10
    assert settings.key_rotation_seconds == 30 * 24 * 3600
    assert settings.registry_addr == "127.0.0.1:50051"
    assert settings.rate_per_client == RateLimit(600, 60.0)
    assert settings.rate_redis_timeout == 0.25
    assert settings.feed_max_subscribers == 256
    assert settings.verified_cache_size == 10_000
    # The public edge is off unless a port is given ("off" says so too).
    assert (settings.edge_host, settings.edge_port) == ("127.0.0.1", None)
    assert TokenSettings.from_env(Env({"OTESSE_TOKEN_EDGE_PORT": "OFF"})).edge_port is None
    assert TokenSettings.from_env(Env({"OTESSE_TOKEN_EDGE_PORT": "8005"})).edge_port == 8005
    assert TokenSettings.from_env(Env({"OTESSE_TOKEN_VERIFIED_CACHE_SIZE": "0"})
                                  ).verified_cache_size == 0
    assert TokenSettings.from_env(Env({"OTESSE_TOKEN_RATE_PER_CLIENT": "off"})
                                  ).rate_per_client is None
    assert settings.kek_is_default and settings.kek.value == DEV_KEK
    assert "otesse" not in repr(settings.kek)


def test_a_set_kek_is_used_and_masked() -> None:
    kek = base64.b64encode(bytes(range(32))).decode()
    settings = TokenSettings.from_env(Env({"OTESSE_TOKEN_KEK": kek,
                                           "OTESSE_ISSUER": "https://auth.otesse.com/"}))
    assert settings.kek_bytes == bytes(range(32)) and not settings.kek_is_default
    assert kek not in repr(settings)
    assert settings.issuer == "https://auth.otesse.com"


@pytest.mark.parametrize(("environ", "named"), [
    ({"OTESSE_TOKEN_KEK": "c2hvcnQ="}, "OTESSE_TOKEN_KEK"),
    ({"OTESSE_TOKEN_KEK": "not base64!"}, "OTESSE_TOKEN_KEK"),
    ({"OTESSE_TOKEN_REFRESH_RETRY_WINDOW_SECONDS": "-1"},
     "OTESSE_TOKEN_REFRESH_RETRY_WINDOW_SECONDS"),
    ({"OTESSE_TOKEN_ACCESS_TTL_SECONDS": "ten"}, "OTESSE_TOKEN_ACCESS_TTL_SECONDS"),
    ({"OTESSE_TOKEN_KEY_ROTATION_SECONDS": "600"}, "OTESSE_TOKEN_KEY_ROTATION_SECONDS"),
    ({"OTESSE_ISSUER": "localhost:8000"}, "OTESSE_ISSUER"),
    ({"OTESSE_TOKEN_GRPC_PORT": "70000"}, "OTESSE_TOKEN_GRPC_PORT"),
    ({"OTESSE_TOKEN_RATE_PER_CLIENT": "lots"}, "OTESSE_TOKEN_RATE_PER_CLIENT"),
    ({"OTESSE_TOKEN_RATE_REDIS_TIMEOUT_SECONDS": "0"},
     "OTESSE_TOKEN_RATE_REDIS_TIMEOUT_SECONDS"),
    ({"OTESSE_TOKEN_FEED_MAX_SUBSCRIBERS": "0"}, "OTESSE_TOKEN_FEED_MAX_SUBSCRIBERS"),
    ({"OTESSE_TOKEN_VERIFIED_CACHE_SIZE": "-1"}, "OTESSE_TOKEN_VERIFIED_CACHE_SIZE"),
    ({"OTESSE_TOKEN_EDGE_PORT": "eight"}, "OTESSE_TOKEN_EDGE_PORT"),
    ({"OTESSE_TOKEN_EDGE_PORT": "8002"}, "OTESSE_TOKEN_EDGE_PORT"),
    ({"OTESSE_TOKEN_EDGE_PORT": "50052"}, "OTESSE_TOKEN_EDGE_PORT"),
], ids=["KEK not 32 bytes", "KEK not base64", "negative retry window", "TTL not a number",
        "rotation shorter than two token lives", "issuer not absolute", "port out of range",
        "per-client rate not COUNT/SECONDS", "rate-limit timeout of zero",
        "no feed subscriber allowed", "negative verified-token cache", "edge port not a number",
        "edge port is the HTTP port", "edge port is the gRPC port"])
def test_malformed_settings_name_the_variable(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        TokenSettings.from_env(Env(environ))
    assert named in str(caught.value)
    assert "\n" not in str(caught.value)

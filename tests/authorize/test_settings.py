"""Authorize settings: local defaults, and one-line errors naming the variable."""

from __future__ import annotations

import ipaddress

import pytest

from services.authorize.settings import AuthorizeSettings
from services.common.settings import ConfigError, Env


def test_defaults_match_the_local_stack() -> None:
    settings = AuthorizeSettings.from_env(Env({}))
    assert (settings.host, settings.port) == ("127.0.0.1", 8001)
    assert settings.issuer == "http://localhost:8000"
    assert settings.registry_addr == "127.0.0.1:50051"
    assert settings.session_idle_seconds == 1800
    assert settings.session_absolute_seconds == 12 * 3600
    assert settings.trusted_proxies == (ipaddress.ip_network("127.0.0.1/32"),
                                        ipaddress.ip_network("::1/128"))
    assert not settings.secure_cookies
    assert settings.login.account_lock_after == 10
    assert (settings.login.account_ip_lock_after, settings.login.device_lock_after) == (5, 10)
    assert settings.login.device_seconds == 180 * 24 * 3600


def test_an_https_issuer_means_secure_cookies() -> None:
    settings = AuthorizeSettings.from_env(Env({"OTESSE_ISSUER": "https://auth.otesse.com"}))
    assert settings.secure_cookies
    assert settings.issuer == "https://auth.otesse.com"


BAD = [
    ("OTESSE_AUTHORIZE_PORT", "http"),
    ("OTESSE_AUTHORIZE_PORT", "70000"),
    ("OTESSE_ISSUER", "auth.otesse.com"),
    ("OTESSE_AUTHORIZE_SESSION_IDLE_SECONDS", "10"),
    ("OTESSE_AUTHORIZE_TRUSTED_PROXIES", "10.0.0.0/33"),
    ("OTESSE_AUTHORIZE_LOGIN_ACCOUNT_LOCK_AFTER", "0"),
    ("OTESSE_AUTHORIZE_CLIENT_CACHE_SECONDS", "-1"),
    ("OTESSE_AUTHORIZE_LOGIN_ACCOUNT_IP_LOCK_AFTER", "0"),
    ("OTESSE_AUTHORIZE_LOGIN_DEVICE_LOCK_AFTER", "many"),
    ("OTESSE_AUTHORIZE_DEVICE_COOKIE_SECONDS", "10"),
    ("OTESSE_SERVICE_CREDENTIAL_KEY", "c2hvcnQ="),
]


@pytest.mark.parametrize(("name", "value"), BAD, ids=[f"{n}={v}" for n, v in BAD])
def test_a_malformed_setting_stops_start_up_naming_it(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        AuthorizeSettings.from_env(Env({name: value}))
    message = str(raised.value)
    assert name in message and "\n" not in message

"""Settings: local defaults with no environment, one-line errors naming the variable."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from services.authorize.settings import AuthorizeSettings
from services.common.settings import ConfigError, Env, Secret, ServiceSettings, StoreSettings
from services.gateway.settings import GatewaySettings
from services.registry.settings import RegistrySettings
from services.token.settings import TokenSettings


def test_defaults_need_no_environment() -> None:
    settings = RegistrySettings.from_env(Env({}))
    assert settings.grpc_port == 50051
    assert settings.stores.database_url.value.startswith("postgresql://")
    assert settings.stores.redis_prefix == "otesse:"


@pytest.mark.parametrize(("environ", "name"), [
    ({"OTESSE_REGISTRY_GRPC_PORT": "fifty"}, "OTESSE_REGISTRY_GRPC_PORT"),
    ({"OTESSE_REGISTRY_GRPC_PORT": "70000"}, "OTESSE_REGISTRY_GRPC_PORT"),
    ({"OTESSE_DB_POOL_MAX": "0"}, "OTESSE_DB_POOL_MAX"),
    ({"OTESSE_SHUTDOWN_DRAIN_SECONDS": "-3"}, "OTESSE_SHUTDOWN_DRAIN_SECONDS"),
    ({"OTESSE_GRPC_TLS_CERT": "/tmp/cert.pem"}, "OTESSE_GRPC_TLS_KEY"),
], ids=["fails because the port is not a number", "fails because the port is out of range",
        "fails because the pool would be empty", "fails because the drain time is negative",
        "fails because a TLS certificate has no key"])
def test_malformed_settings_name_the_variable(environ: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError) as info:
        RegistrySettings.from_env(Env(environ))
    assert name in str(info.value)
    assert "\n" not in str(info.value)


def test_url_and_networks_are_checked() -> None:
    env = Env({"OTESSE_X_URL": "ftp://x", "OTESSE_NETS": "10.0.0.0/8, nonsense"})
    with pytest.raises(ConfigError, match="OTESSE_X_URL"):
        env.url("OTESSE_X_URL", "http://localhost")
    with pytest.raises(ConfigError, match="OTESSE_NETS"):
        env.networks("OTESSE_NETS")
    with pytest.raises(ConfigError, match="OTESSE_REQUIRED is required"):
        env.text("OTESSE_REQUIRED")


def test_secrets_never_show_in_repr() -> None:
    settings = StoreSettings.from_env(Env({"OTESSE_DATABASE_URL": "postgresql://u:hunter2@db/x"}))
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(Secret("hunter2"))


def test_a_service_with_a_bad_setting_stops_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "serve", "registry"],
        env={"OTESSE_REGISTRY_GRPC_PORT": "nope", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "OTESSE_REGISTRY_GRPC_PORT" in lines[0]


SERVICE_SETTINGS = [RegistrySettings, TokenSettings, AuthorizeSettings, GatewaySettings]


@pytest.mark.parametrize("settings_class", SERVICE_SETTINGS,
                         ids=[cls.__name__ for cls in SERVICE_SETTINGS])
def test_every_service_reads_the_shared_settings_the_same_way(
        settings_class: Any) -> None:
    environ = {"OTESSE_ISSUER": "https://auth.example.test", "OTESSE_LOG_LEVEL": "DEBUG",
               "OTESSE_SHUTDOWN_DRAIN_SECONDS": "5", "OTESSE_REDIS_PREFIX": "shared:",
               "OTESSE_GRPC_TLS_CERT": "/tls/cert.pem", "OTESSE_GRPC_TLS_KEY": "/tls/key.pem"}
    settings = settings_class.from_env(Env(environ))
    assert isinstance(settings, ServiceSettings)
    shared = ServiceSettings.shared(Env(environ))
    assert {name: getattr(settings, name) for name in shared} == shared
    assert (settings.issuer, settings.log_level, settings.drain_seconds) == (
        "https://auth.example.test", "DEBUG", 5.0)
    assert settings.tls.enabled and settings.stores.redis_prefix == "shared:"


@pytest.mark.parametrize(("retired", "replacement"), [
    ("OTESSE_GATEWAY_RATE_TOKEN_PER_CLIENT", "OTESSE_TOKEN_RATE_PER_CLIENT"),
    ("OTESSE_GATEWAY_MAX_BODY_BYTES", "OTESSE_GATEWAY_MAX_TOKEN_BODY_BYTES"),
], ids=["gateway-rate-per-client", "gateway-max-body-bytes"])
@pytest.mark.parametrize("settings_class", SERVICE_SETTINGS,
                         ids=[cls.__name__ for cls in SERVICE_SETTINGS])
def test_a_retired_setting_stops_start_up_naming_its_replacement(
        settings_class: Any, retired: str, replacement: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_class.from_env(Env({retired: "1000"}))
    assert retired in str(info.value) and replacement in str(info.value)
    assert "\n" not in str(info.value)

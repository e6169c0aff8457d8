"""Settings: local defaults with no environment, one-line errors naming the variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from services.common.settings import ConfigError, Env, Secret, StoreSettings
from services.registry.settings import RegistrySettings


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

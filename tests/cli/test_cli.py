"""``otesse-auth`` as scripts use it: a real process against this run's stores and registry."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import asyncpg
import pytest

from services.authorize import passwords
from services.common import credentials


async def cli(env: dict[str, str], *args: str, expect: int = 0) -> tuple[str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli.main", *args,
        env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == expect, err.decode()
    return out.decode(), err.decode()


@pytest.fixture
def env(test_env: dict[str, str], registry_address: str) -> dict[str, str]:
    return {**test_env, "OTESSE_REGISTRY_ADDR": registry_address}


async def test_users_create_list_disable(env: dict[str, str], pool: asyncpg.Pool) -> None:
    out, _ = await cli(env, "users", "create", "--email", "Ada@Example.test",
                       "--password", "correct horse battery", "--json")
    user = json.loads(out)
    assert user["email"] == "Ada@Example.test" and not user["disabled"]
    stored = await pool.fetchval("SELECT password_hash FROM authorize.users WHERE user_id = $1",
                                 user["user_id"])
    assert stored.startswith("$argon2id$")
    assert passwords.verify(stored, "correct horse battery")
    _, err = await cli(env, "users", "create", "--email", "ada@example.test",
                       "--password", "another password", expect=1)
    assert "already exists" in err and len(err.strip().splitlines()) == 1
    out, _ = await cli(env, "users", "list", "--json")
    assert any(row["user_id"] == user["user_id"] for row in json.loads(out))
    await cli(env, "users", "disable", "--email", "ada@example.test")
    out, _ = await cli(env, "users", "list", "--json")
    assert [row["disabled"] for row in json.loads(out) if row["user_id"] == user["user_id"]] == [
        True]


async def test_a_password_that_starts_with_a_dash_is_given_with_an_equals_sign(
        env: dict[str, str], pool: asyncpg.Pool) -> None:
    # token_urlsafe() starts with "-" once in 64: `make run` and the benchmark create their
    # users with random passwords, so they pass "--password=…", which this proves works (the
    # two-word form takes such a password for an option).
    password = "-Dash-first-password"
    _, err = await cli(env, "users", "create", "--email", "dash@example.test", "--password",
                       password, expect=2)
    assert "expected one argument" in err
    out, _ = await cli(env, "users", "create", "--email", "dash@example.test",
                       f"--password={password}", "--json")
    stored = await pool.fetchval("SELECT password_hash FROM authorize.users WHERE user_id = $1",
                                 json.loads(out)["user_id"])
    assert passwords.verify(stored, password)


@pytest.mark.parametrize(("args", "message"), [
    (["--email", "not-an-email", "--password", "long enough pw"], "--email"),
    (["--email", "a@b.test", "--password", "short"], "--password"),
], ids=["fails because the email is malformed", "fails because the password is short"])
async def test_users_create_refuses_bad_input(env: dict[str, str], args: list[str],
                                              message: str) -> None:
    _, err = await cli(env, "users", "create", *args, expect=1)
    assert message in err


async def test_clients_lifecycle_with_json(env: dict[str, str]) -> None:
    out, _ = await cli(env, "clients", "create", "--name", "Script App",
                       "--redirect-uri", "https://script.example/cb",
                       "--redirect-uri", "http://127.0.0.1:8765/callback",
                       "--scope", "bookings:read customers:read", "--owner", "cli-owner", "--json")
    created: dict[str, Any] = json.loads(out)
    client_id = created["client_id"]
    assert credentials.is_well_formed(created["client_secret"], "otesse_cs_")
    assert created["redirect_uris"] == ["https://script.example/cb",
                                        "http://127.0.0.1:8765/callback"]
    out, _ = await cli(env, "clients", "show", client_id, "--json")
    shown = json.loads(out)
    assert shown["scope"] == "bookings:read customers:read"
    assert "client_secret" not in shown
    out, _ = await cli(env, "clients", "list", "--owner", "cli-owner", "--json")
    assert [row["client_id"] for row in json.loads(out)] == [client_id]
    out, _ = await cli(env, "clients", "rotate-secret", client_id, "--overlap-seconds", "0",
                       "--json")
    rotated = json.loads(out)
    assert rotated["client_secret"] != created["client_secret"]
    await cli(env, "clients", "delete", client_id)
    _, err = await cli(env, "clients", "show", client_id, expect=1)
    assert "not_found" in err


async def test_public_client_prints_no_secret(env: dict[str, str]) -> None:
    out, _ = await cli(env, "clients", "create", "--name", "Mobile",
                       "--redirect-uri", "http://127.0.0.1:1/cb", "--scope", "bookings:read",
                       "--public", "--json")
    created = json.loads(out)
    assert created["client_type"] == "public" and "client_secret" not in created


async def test_clients_create_shows_the_field_error(env: dict[str, str]) -> None:
    _, err = await cli(env, "clients", "create", "--name", "Bad",
                       "--redirect-uri", "http://evil.example/cb", "--scope", "bookings:read",
                       expect=1)
    assert "invalid_argument: redirect_uris:" in err


async def test_registry_down_is_one_clear_line(env: dict[str, str]) -> None:
    from tests.conftest import free_port

    down = {**env, "OTESSE_REGISTRY_ADDR": f"127.0.0.1:{free_port()}"}
    _, err = await cli(down, "clients", "list", expect=1)
    assert "not reachable" in err and len(err.strip().splitlines()) == 1


async def test_migrate_is_idempotent(env: dict[str, str]) -> None:
    out, _ = await cli(env, "migrate")
    assert out.strip() == "nothing to apply"

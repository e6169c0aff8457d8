"""The reference server of ``make bench-peer``: panva's node-oidc-provider, started for one run.

``bench/peer/`` holds it: ``package.json`` and ``package-lock.json`` pin node-oidc-provider
8.8.1 and ioredis exactly (``npm ci`` installs them into the git-ignored
``bench/peer/node_modules``), ``server.mjs`` configures it as Otesse's OAuth 2.0 code flow, and
``redis_adapter.mjs`` is its Redis storage. Here it is started on a free loopback port in one
of two storage modes, ``redis`` (its keys under a prefix of their own on the benchmark's Redis,
deleted before and after) or ``memory`` (the provider's own in-memory adapter); its one user
signs in and approves the app once, through two form posts, as on Otesse.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import httpx

from bench import flow
from bench.load import StepFailed
from bench.ports import free_port
from bench.stack import (
    REDIRECT_URI,
    SCOPE,
    StackFailed,
    clear_redis,
    dying_with_parent,
)

PEER = Path(__file__).resolve().parent / "peer"
PACKAGE = "oidc-provider"
VERSION = "8.8.1"
REDIS_PREFIX = "otesse-bench-peer:"
START_SECONDS = 30.0
STOP_SECONDS = 10.0
ACCOUNT = "bench-user"
Storage = Literal["redis", "memory"]


@dataclass(frozen=True)
class Reference:
    storage: Storage
    base_url: str
    pid: int
    app: flow.App
    # The ``Cookie`` header of the signed-in user's session.
    session: dict[str, str]

    @property
    def name(self) -> str:
        return f"node-oidc-provider ({self.storage})"


def installed_version() -> str | None:
    """The node-oidc-provider that ``npm ci`` put in ``bench/peer/node_modules``, if any."""
    try:
        package = json.loads((PEER / "node_modules" / PACKAGE / "package.json").read_text())
    except (OSError, ValueError):
        return None
    version = package.get("version")
    return version if isinstance(version, str) else None


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise StackFailed("node is not installed (Node 20: Debian's nodejs package)")
    return node


async def node_version() -> str:
    process = await asyncio.create_subprocess_exec(_node(), "--version",
                                                   stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    return out.decode().strip()


def _environment(storage: Storage, port: int, app: flow.App, redis_url: str,
                 prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTESSE_", "PEER_"))}
    env.update({
        "NODE_ENV": "production",
        "PEER_PORT": str(port),
        "PEER_STORAGE": storage,
        "PEER_CLIENT_ID": app.client_id,
        "PEER_CLIENT_SECRET": app.client_secret,
        "PEER_REDIRECT_URI": app.redirect_uri,
        "PEER_SCOPE": app.scope,
    })
    if storage == "redis":
        env.update({"PEER_REDIS_URL": redis_url, "PEER_REDIS_PREFIX": prefix})
    return env


async def _wait_listening(log_path: Path, process: asyncio.subprocess.Process) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_SECONDS
    while loop.time() < deadline:
        if "listening on " in log_path.read_text(errors="replace"):
            return True
        if process.returncode is not None:
            return False
        await asyncio.sleep(0.05)
    return False


async def sign_in_and_consent(base_url: str, app: flow.App) -> dict[str, str]:
    """Signs the account in and approves the app (``server.mjs``'s two form posts), then
    returns the session's ``Cookie`` header: later authorizations redirect straight back."""
    verifier = secrets.token_urlsafe(48)
    state = secrets.token_urlsafe(12)
    params = {**flow.authorize_params(app, state), **flow.pkce_params(verifier)}
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0) as browser:
        response = await browser.get("/auth", params=params)
        for _ in range(6):
            location = response.headers.get("location", "")
            if response.status_code not in (302, 303) or location.startswith(app.redirect_uri):
                break
            path = urlsplit(location).path
            if path.startswith("/interaction/"):
                prompt = (await browser.get(path)).json()["prompt"]
                response = await browser.post(f"{path}/{prompt}", data={"account": ACCOUNT})
            else:
                response = await browser.get(path)
        flow.code_from(response, app, state)
        cookies = {c.name: c.value for c in browser.cookies.jar if c.name.startswith("_session")}
    if not cookies:
        raise StepFailed("node-oidc-provider set no session cookie")
    return {"Cookie": "; ".join(f"{name}={value}" for name, value in cookies.items())}


@contextlib.asynccontextmanager
async def running_reference(storage: Storage, *, redis_url: str, log_path: Path,
                            prefix: str = REDIS_PREFIX) -> AsyncIterator[Reference]:
    if installed_version() != VERSION:
        raise StackFailed(f"node-oidc-provider {VERSION} is not installed in {PEER}: "
                          "`make bench-peer` installs it (npm ci)")
    node = _node()
    app = flow.App(client_id="otesse-bench-peer", client_secret=secrets.token_urlsafe(32),
                   redirect_uri=REDIRECT_URI, scope=SCOPE)
    port = free_port()
    if storage == "redis":
        await clear_redis(redis_url, prefix)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        # A benchmark killed outright must not leave node running.
        process = await asyncio.create_subprocess_exec(
            *dying_with_parent([node, str(PEER / "server.mjs")]), cwd=PEER,
            env=_environment(storage, port, app, redis_url, prefix),
            stdout=log, stderr=asyncio.subprocess.STDOUT)
    try:
        if not await _wait_listening(log_path, process):
            tail = "\n  ".join(log_path.read_text(errors="replace").splitlines()[-8:])
            raise StackFailed(f"node-oidc-provider did not start (see {log_path}):\n  {tail}")
        base_url = f"http://127.0.0.1:{port}"
        session = await sign_in_and_consent(base_url, app)
        yield Reference(storage=storage, base_url=base_url, pid=process.pid, app=app,
                        session=session)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_SECONDS)
            except TimeoutError:
                process.kill()
                await process.wait()
        if storage == "redis":
            await clear_redis(redis_url, prefix)

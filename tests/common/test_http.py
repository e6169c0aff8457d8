"""The JSON error rendering every API service shares: a store or peer that is down is a 503 with
``Retry-After`` and an RFC 6749 body, answered by the service itself — never a 500, never a
traceback in the log, and the access log says 503 too.

Each dependency fails for real: a Redis, a PostgreSQL and a gRPC peer on a port where nothing
listens, and a Redis that stopped answering (SIGSTOP) for the timeout.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
import redis.exceptions
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from otesse.auth.v1 import registry_pb2, registry_pb2_grpc
from services.common.errors import TemporarilyUnavailable
from services.common.grpc_client import create_channel
from services.common.http import (
    Readiness,
    RequestContextMiddleware,
    health_routes,
    json_error_handlers,
)
from services.common.log import request_id_var
from services.common.unavailable import is_unavailable
from services.token.keys import NoSigningKey
from tests.conftest import free_port
from tests.faults.stores import PrivateRedis
from tests.servers import serve_app

Failure = Callable[[], Awaitable[object]]


async def redis_refused() -> object:
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0",
                                     socket_connect_timeout=1.0)
    try:
        return await client.get("key")
    finally:
        await client.aclose()


async def postgres_refused() -> object:
    pool = await asyncpg.create_pool(f"postgresql://postgres@127.0.0.1:{free_port()}/x",
                                     min_size=0, timeout=1.0)
    try:
        return await pool.fetchval("SELECT 1")
    finally:
        await pool.close()


async def registry_refused() -> object:
    channel = create_channel(f"127.0.0.1:{free_port()}",
                             services=("otesse.auth.v1.ClientRegistry",))
    try:
        return await registry_pb2_grpc.ClientRegistryStub(channel).GetClient(
            registry_pb2.GetClientRequest(client_id="otesse_ci_x"), timeout=2.0)
    finally:
        await channel.close()


@pytest_asyncio.fixture(scope="module")
async def stalled_redis(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A Redis that accepts connections and never answers (stopped with SIGSTOP)."""
    server = PrivateRedis(Path(tmp_path_factory.mktemp("redis")))
    server.start()
    server.pause()
    try:
        yield server.url
    finally:
        server.kill()


@pytest.mark.parametrize("dependency", ["redis-refused", "postgres-refused",
                                        "registry-refused", "redis-stalled"])
async def test_a_dependency_down_is_503_with_retry_after_and_no_traceback(
        dependency: str, stalled_redis: str, caplog: pytest.LogCaptureFixture) -> None:
    async def redis_stalled() -> object:
        client = aioredis.Redis.from_url(stalled_redis, socket_timeout=0.5)
        try:
            return await client.get("key")
        finally:
            await client.aclose()

    failures: dict[str, Failure] = {"redis-refused": redis_refused,
                                    "postgres-refused": postgres_refused,
                                    "registry-refused": registry_refused,
                                    "redis-stalled": redis_stalled}

    async def endpoint(request: Request) -> Response:
        await failures[dependency]()
        raise AssertionError("the dependency answered")

    app = Starlette(routes=[Route("/oauth/token", endpoint, methods=["POST"])],
                    exception_handlers=json_error_handlers())
    app.add_middleware(RequestContextMiddleware, service="test")
    caplog.set_level(logging.INFO)
    async with serve_app(app, lifespan="off") as url, httpx.AsyncClient(timeout=10) as http:
        response = await http.post(url + "/oauth/token")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.headers["cache-control"] == "no-store"
    assert response.json()["error"] == "temporarily_unavailable"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], [
        r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    # The access log tells what the client saw.
    assert [r.__dict__["status"] for r in caplog.records if r.name == "otesse.access"] == [503]


async def test_not_ready_is_503_with_retry_after() -> None:
    readiness = Readiness(checks={"redis": redis_refused})
    app = Starlette(routes=health_routes(readiness))
    async with serve_app(app, lifespan="off") as url, httpx.AsyncClient(timeout=10) as http:
        response = await http.get(url + "/readyz")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["checks"]["redis"] == "unavailable (ConnectionError)"


async def test_shared_dependency_must_answer_once_then_only_degrades() -> None:
    """A dependency every replica shares gates readiness until it first answers (a rollout with
    a wrong address never turns ready); a later outage leaves the replica in rotation, marked
    degraded, since pulling every replica out would fail even the requests that don't need it."""
    redis_up = False

    async def redis() -> None:
        if not redis_up:
            raise ConnectionError("refused")

    readiness = Readiness(dependencies={"redis": redis})
    app = Starlette(routes=health_routes(readiness))
    async with serve_app(app, lifespan="off") as url, httpx.AsyncClient(timeout=10) as http:
        never = await http.get(url + "/readyz")
        redis_up = True
        up = await http.get(url + "/readyz")
        redis_up = False
        outage = await http.get(url + "/readyz")
        readiness.draining = True
        draining = await http.get(url + "/readyz")
    assert never.status_code == 503
    assert never.json()["status"] == "not ready"
    assert never.json()["checks"]["redis"] == "unavailable (ConnectionError)"
    assert (up.status_code, up.json()["status"]) == (200, "ready")
    assert (outage.status_code, outage.json()["status"]) == (200, "degraded")
    assert outage.json()["checks"]["redis"] == "unavailable (ConnectionError)"
    assert "retry-after" not in outage.headers
    assert (draining.status_code, draining.json()["status"]) == (503, "not ready")


async def test_own_check_failing_takes_the_replica_out_even_after_it_passed() -> None:
    keys_loaded = True

    async def signing_keys() -> None:
        if not keys_loaded:
            raise LookupError("no current key")

    readiness = Readiness(checks={"signing_keys": signing_keys})
    app = Starlette(routes=health_routes(readiness))
    async with serve_app(app, lifespan="off") as url, httpx.AsyncClient(timeout=10) as http:
        first = await http.get(url + "/readyz")
        keys_loaded = False
        later = await http.get(url + "/readyz")
    assert first.status_code == 200
    assert (later.status_code, later.json()["status"]) == (503, "not ready")


class _RequestIdsSeen(logging.Handler):
    """The request id in context when each record was emitted (the JSON formatter reads it
    then)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[tuple[str, str, bool]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record.getMessage(), request_id_var.get(), record.exc_info is not None))


def _missing_file() -> object:
    return Path("/nonexistent/otesse/key.pem").read_bytes()


def _missing_key() -> object:
    fields: dict[str, str] = {}
    return fields["client_id"]


def _denied() -> object:
    raise PermissionError(13, "Permission denied", "/etc/otesse/kek")


@pytest.mark.parametrize("bug", [_missing_file, _missing_key, _denied],
                         ids=["file-not-found", "key-error", "permission-denied"])
async def test_a_programming_error_is_a_logged_500_naming_the_request_id(
        bug: Failure, caplog: pytest.LogCaptureFixture) -> None:
    """Not a silent 503: a FileNotFoundError is an OSError, but no dependency is down."""
    async def endpoint(request: Request) -> Response:
        bug()
        raise AssertionError("the bug did not happen")

    app = Starlette(routes=[Route("/oauth/token", endpoint, methods=["POST"])],
                    exception_handlers=json_error_handlers())
    app.add_middleware(RequestContextMiddleware, service="test")
    seen = _RequestIdsSeen()
    logging.getLogger("otesse.http").addHandler(seen)
    caplog.set_level(logging.INFO)
    try:
        async with serve_app(app, lifespan="off") as url, httpx.AsyncClient(timeout=10) as http:
            response = await http.post(url + "/oauth/token",
                                       headers={"X-Request-ID": "bug-report-1"})
    finally:
        logging.getLogger("otesse.http").removeHandler(seen)
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "bug-report-1"
    assert response.headers["cache-control"] == "no-store"
    assert "retry-after" not in response.headers
    body = response.json()
    assert body["error"] == "server_error"
    assert "bug-report-1" in body["error_description"]
    assert "Traceback" not in response.text and "nonexistent" not in response.text
    # Logged once, with its traceback, under the request id the client was given.
    assert seen.seen == [("unexpected error", "bug-report-1", True)]
    assert [r.__dict__["status"] for r in caplog.records if r.name == "otesse.access"] == [500]


async def test_an_unexpected_error_on_a_browser_service_is_its_own_page() -> None:
    async def endpoint(request: Request) -> Response:
        raise KeyError("session")

    async def page(request: Request, exc: Exception) -> Response:
        return Response(f"<p>{type(exc).__name__}</p>", status_code=500,
                        media_type="text/html")

    app = Starlette(routes=[Route("/settings", endpoint)])
    app.add_middleware(RequestContextMiddleware, service="test", render_unexpected=page)
    async with serve_app(app, lifespan="off") as url, httpx.AsyncClient(timeout=10) as http:
        response = await http.get(url + "/settings")
    assert (response.status_code, response.text) == (500, "<p>KeyError</p>")
    assert response.headers["x-request-id"]


@pytest.mark.parametrize(("exc", "down"), [
    (ConnectionRefusedError(111, "Connection refused"), True),
    (ConnectionResetError(104, "Connection reset by peer"), True),
    (TimeoutError(), True),
    (socket.gaierror(-2, "Name or service not known"), True),
    (OSError(errno.EHOSTUNREACH, "No route to host"), True),
    (OSError("Multiple exceptions: [Errno 111] Connect call failed ('::1', 5432), "
             "[Errno 111] Connect call failed ('127.0.0.1', 5432)"), True),
    (redis.exceptions.ConnectionError("refused"), True),
    (FileNotFoundError(2, "No such file or directory"), False),
    (PermissionError(13, "Permission denied"), False),
    (IsADirectoryError(21, "Is a directory"), False),
    (OSError("some other failure"), False),
    (KeyError("x"), False),
    (redis.exceptions.ResponseError("WRONGTYPE"), False),
], ids=["refused", "reset", "timeout", "dns", "no-route", "multiple-addresses",
        "redis-connection", "file-not-found", "permission", "is-a-directory", "other-oserror",
        "key-error", "redis-wrongtype"])
def test_only_a_dependency_out_of_reach_is_unavailable(exc: BaseException, down: bool) -> None:
    assert is_unavailable(exc) is down


def test_no_signing_key_is_unavailable_on_purpose_not_by_inheritance() -> None:
    error = NoSigningKey()
    assert isinstance(error, TemporarilyUnavailable) and not isinstance(error, OSError)
    assert (error.status_code, error.error) == (503, "temporarily_unavailable")

"""What every HTTP service shares: request context, access log, errors, health and metrics.

* :class:`RequestContextMiddleware` (pure ASGI, so it costs little on hot paths) takes the
  request id from ``X-Request-ID`` or makes one, echoes it, writes one access-log line and one
  metric per request.
* :func:`json_error_handlers` renders :class:`~services.common.errors.OAuthError` as
  ``{"error", "error_description"}`` with ``Cache-Control: no-store``, and a store or peer
  that is down as ``503 temporarily_unavailable`` with ``Retry-After``, answered by the app
  itself (logged as a warning, no traceback). Browser services pass their own renderer for
  HTML pages.
* Anything unexpected (a bug: a ``KeyError``, a file that is not there) reaches
  :class:`RequestContextMiddleware`, which logs it with its traceback and the request id and
  answers ``500 server_error`` naming the request id and nothing else, so an operator can find
  the story from what the client reports.
* :func:`health_routes` serves ``/healthz``, ``/readyz`` and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common import request_id
from services.common.errors import (
    OAuthError,
    ServerError,
    TemporarilyUnavailable,
    TooManyRequests,
    json_error,
)
from services.common.log import request_id_var
from services.common.metrics import DEPENDENCY_ERRORS, HTTP_REQUESTS
from services.common.unavailable import DEPENDENCY_FAILURES, is_unavailable

access_log = logging.getLogger("otesse.access")
log = logging.getLogger("otesse.http")

# RFC 6749 §5.1: "The authorization server MUST include the HTTP "Cache-Control" response
# header field [RFC2616] with a value of "no-store" in any response containing tokens,
# credentials, or other sensitive information, as well as the "Pragma" response header field
# [RFC2616] with a value of "no-cache"." Every API answer and every page carries both.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

ErrorRenderer = Callable[[Request, Exception], Awaitable[Response]]
# A request's scope holds this when an edge in the same process handed it to the app
# (services.gateway.in_process): the edge's own middleware has its id, its line and its metric.
IN_PROCESS = "otesse.in_process"


async def _json_unexpected(request: Request, exc: Exception) -> Response:
    return oauth_error_response(classify(exc))


class RequestContextMiddleware:
    """Request id in and out, one access-log line and one metric per request, and the answer
    to anything unexpected (``render_unexpected``: JSON by default, a page for browsers)."""

    def __init__(self, app: ASGIApp, *, service: str,
                 extra_headers: Sequence[tuple[bytes, bytes]] = (),
                 render_unexpected: ErrorRenderer = _json_unexpected) -> None:
        self.app = app
        self.service = service
        self.extra_headers = list(extra_headers)
        self.render_unexpected = render_unexpected

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope.get(IN_PROCESS):
            await self._in_process(scope, receive, send)
            return
        incoming = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        rid = request_id.accept_or_new(incoming)
        token = request_id_var.set(rid)
        started = time.perf_counter()
        status = 500
        started_response = False
        rid_header = (b"x-request-id", rid.encode())

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status = message["status"]
                started_response = True
                headers = list(message.get("headers", ()))
                headers.append(rid_header)
                headers.extend(self.extra_headers)
                message = {**message, "headers": headers}
            await send(message)

        try:
            try:
                await self.app(scope, receive, send_wrapper)
            except Exception as exc:
                if started_response:
                    # Half an answer is out: nothing clean can follow. The server closes the
                    # connection; the log has the story.
                    log.error("unexpected error after the answer started", exc_info=exc)
                    raise
                await self._answer_unexpected(exc, scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            route_path = getattr(route, "path", None) or "unmatched"
            HTTP_REQUESTS.labels(self.service, scope["method"], route_path,
                                 str(status)).observe(elapsed)
            client = scope.get("client")
            access_log.info("request", extra={
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "duration_ms": round(elapsed * 1000, 3),
                "client": client[0] if client else None,
            })
            request_id_var.reset(token)


    async def _in_process(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A request an edge in this process handed over: the edge has set its id and writes
        its line and its metric; only what is unexpected is still answered here."""
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if started:
                raise  # half an answer is out: the edge logs it and the connection closes
            await self._answer_unexpected(exc, scope, receive, send)

    async def _answer_unexpected(self, exc: Exception, scope: Scope, receive: Receive,
                                 send: Send) -> None:
        # Logged (with the request id) by classify(); the client learns the id only.
        response = await self.render_unexpected(Request(scope, receive), exc)
        await response(scope, receive, send)


def oauth_error_response(exc: OAuthError, *, headers: Mapping[str, str] | None = None) -> Response:
    all_headers = {**NO_STORE, **(headers or {})}
    www_authenticate = getattr(exc, "www_authenticate", None)
    if www_authenticate:
        all_headers["WWW-Authenticate"] = www_authenticate
    if isinstance(exc, (TooManyRequests, TemporarilyUnavailable)):
        all_headers["Retry-After"] = str(exc.retry_after)
    return Response(json_error(exc.error, exc.description), status_code=exc.status_code,
                    headers=all_headers, media_type="application/json")


def classify(exc: Exception) -> OAuthError:
    """The OAuth error to show for any exception; logs what the client must not see."""
    if isinstance(exc, OAuthError):
        return exc
    if is_unavailable(exc):
        DEPENDENCY_ERRORS.labels("http").inc()
        log.warning("dependency unavailable", extra={"error": type(exc).__name__})
        return TemporarilyUnavailable("The service is temporarily unavailable; retry shortly.")
    log.error("unexpected error", exc_info=exc)
    return ServerError(f"The server encountered an unexpected error; request id "
                       f"{request_id_var.get()}.")


async def _oauth_handler(request: Request, exc: Exception) -> Response:
    return oauth_error_response(classify(exc))


async def _http_exception_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        body = json_error("not_found", "No such endpoint.")
    elif exc.status_code == 405:
        body = json_error("invalid_request", "Method not allowed.")
    else:
        body = json_error("invalid_request", str(exc.detail))
    return Response(body, status_code=exc.status_code, media_type="application/json",
                    headers={**NO_STORE, **(exc.headers or {})})


def json_error_handlers() -> dict[Any, Callable[[Request, Exception], Awaitable[Response]]]:
    """Exception handlers for API services: every error is RFC 6749 §5.2 JSON."""
    return {
        OAuthError: _oauth_handler,
        HTTPException: _http_exception_handler,
        # A store or peer that fails is answered inside the app, like an OAuth error. Nothing
        # is keyed on Exception: Starlette runs such a handler in its outermost middleware,
        # outside the request context, and re-raises after answering (a traceback without
        # the request id, and no X-Request-ID on the answer). RequestContextMiddleware
        # answers the unexpected instead.
        **dict.fromkeys(DEPENDENCY_FAILURES, _oauth_handler),
    }


@dataclass
class Readiness:
    """What ``/readyz`` checks.

    ``checks`` are this replica's own state (signing keys loaded, listener open): any failure
    takes the replica out of its load balancer. ``dependencies`` are the stores and peers every
    replica shares (Postgres, Redis, the registry, the token service): each must have answered
    once since the process started — a rollout with a wrong address or credential never turns
    ready, so Kubernetes stops it after the first pod — but a later outage only shows in the
    body (``"status": "degraded"``). Every replica sees the same outage: taking them all out of
    rotation would turn "the steps that need Redis answer 503" into "nothing answers", while the
    services already answer each request that needs the broken part with 503 and Retry-After
    and recover by themselves.

    ``draining`` turns true on SIGTERM, before the server stops; ``on_drain`` runs then too (a
    gRPC server turns its health ``NOT_SERVING``)."""

    checks: dict[str, Callable[[], Awaitable[object]]] = field(default_factory=dict)
    dependencies: dict[str, Callable[[], Awaitable[object]]] = field(default_factory=dict)
    draining: bool = False
    on_drain: list[Callable[[], Awaitable[object]]] = field(default_factory=list)
    # The dependencies that have answered at least once since start.
    answered: set[str] = field(default_factory=set)

    async def probe(self) -> dict[str, str]:
        results: dict[str, str] = {}

        async def run(name: str, check: Callable[[], Awaitable[object]]) -> None:
            try:
                await asyncio.wait_for(check(), timeout=2.0)
                results[name] = "ok"
            except Exception as exc:  # noqa: BLE001 - any failure means not ready
                results[name] = f"unavailable ({type(exc).__name__})"

        await asyncio.gather(*(run(name, check)
                               for name, check in {**self.dependencies, **self.checks}.items()))
        self.answered.update(name for name in self.dependencies if results[name] == "ok")
        return results

    def ready(self, results: dict[str, str]) -> bool:
        """Serving traffic: not draining, every own check passing, every dependency seen once."""
        return (not self.draining
                and all(results[name] == "ok" for name in self.checks)
                and self.answered >= self.dependencies.keys())


def health_routes(readiness: Readiness) -> list[Route]:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        results = await readiness.probe()
        ready = readiness.ready(results)
        status = "not ready" if not ready else (
            "ready" if all(v == "ok" for v in results.values()) else "degraded")
        body = {"status": status, "checks": results, "draining": readiness.draining}
        headers = {"Cache-Control": "no-store"} if ready else {"Cache-Control": "no-store",
                                                                "Retry-After": "1"}
        return JSONResponse(body, status_code=200 if ready else 503, headers=headers)

    async def metrics(request: Request) -> Response:
        return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]

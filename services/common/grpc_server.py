"""Building and stopping gRPC servers the same way in every service.

``create_server`` binds (port 0 picks a free one, for tests), installs the standard health
service and one interceptor that carries the request id, records metrics, and maps errors to
status codes: :mod:`services.common.rpc_errors` to their codes, a store or peer that is down
to ``UNAVAILABLE``, anything else to ``INTERNAL`` with the story in the log only.

Stopping is two steps, so that clients balancing per call (:mod:`services.common.grpc_client`)
move away without a failed call: :meth:`GrpcServer.drain` turns the health service
``NOT_SERVING`` (on SIGTERM, while the server keeps answering), and :meth:`GrpcServer.stop`
later sends GOAWAY and finishes the calls in flight within a grace period. Calls that reach a
server as it stops are cancelled by gRPC, not retried: only a drain long enough for every
client to see ``NOT_SERVING`` avoids them.

Every connection is closed after ``MAX_CONNECTION_AGE_SECONDS`` (with a grace for the calls on
it): clients reconnect and resolve the service's name again, so replicas added by a scale-up
get their share of calls from clients that were already connected.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.common import request_id
from services.common.errors import TemporarilyUnavailable
from services.common.log import request_id_var
from services.common.metrics import DEPENDENCY_ERRORS, GRPC_REQUESTS
from services.common.rpc_errors import RpcError
from services.common.settings import GrpcTlsSettings
from services.common.unavailable import is_unavailable

log = logging.getLogger("otesse.grpc")

# A logo is at most 1 MiB; leave room for the rest of a message.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# How long a stopping server lets calls in flight finish (unary calls have 2 s deadlines).
STOP_GRACE_SECONDS = 10.0
# Connections are closed (GOAWAY) after this long, ±10 % jitter, so clients re-resolve the
# service's name; calls on a closing connection get the grace to finish.
MAX_CONNECTION_AGE_SECONDS = 30.0
MAX_CONNECTION_AGE_GRACE_SECONDS = 5.0


class ServiceInterceptor(aio.ServerInterceptor):
    def __init__(self, service: str) -> None:
        self._service = service

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        if handler is not None and handler.unary_stream is not None:
            return self._stream(handler, details.method)
        if handler is None or handler.unary_unary is None:
            return handler
        inner: Callable[[Any, Any], Awaitable[Any]] = handler.unary_unary
        method = details.method

        async def unary(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            token = request_id_var.set(request_id.from_grpc_metadata(context))
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                return await inner(request, context)
            except aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except Exception as exc:
                code, message = self._status_of(exc, method)
                await context.abort(code, message)
            finally:
                self._observe(method, code, started)
                request_id_var.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _stream(self, handler: grpc.RpcMethodHandler[Any, Any], method: str,
                ) -> grpc.RpcMethodHandler[Any, Any]:
        """A server-streaming call, mapped like a unary one: its status is decided here, once
        (a stream that ends because the client left is not an error)."""
        inner = cast(Callable[[Any, Any], Any], handler.unary_stream)

        async def stream(request: Any, context: aio.ServicerContext[Any, Any],
                         ) -> AsyncIterator[Any]:
            token = request_id_var.set(request_id.from_grpc_metadata(context))
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                produced = inner(request, context)
                # An aio streaming behaviour is an async generator, or a coroutine that writes
                # (the health service's Watch).
                if inspect.isasyncgen(produced):
                    async for item in produced:
                        yield item
                else:
                    await produced
            except aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                code, message = self._status_of(exc, method)
                await context.abort(code, message)
            finally:
                self._observe(method, code, started)
                request_id_var.reset(token)

        return grpc.unary_stream_rpc_method_handler(
            stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _status_of(self, exc: Exception, method: str) -> tuple[grpc.StatusCode, str]:
        """The status an exception ends a call with, and its message (called while handling it,
        so an unexpected one is logged with its traceback)."""
        if isinstance(exc, RpcError):
            return exc.code, exc.message
        if isinstance(exc, TemporarilyUnavailable):
            # Raised on purpose (a signing key not loaded yet): a dependency not there.
            return (grpc.StatusCode.UNAVAILABLE,
                    exc.description or "unavailable; retry shortly")
        if is_unavailable(exc):
            DEPENDENCY_ERRORS.labels(self._service).inc()
            log.warning("dependency unavailable", extra={"method": method,
                                                         "error": type(exc).__name__})
            return grpc.StatusCode.UNAVAILABLE, "a dependency is unavailable; retry shortly"
        log.exception("unexpected error", extra={"method": method})
        return grpc.StatusCode.INTERNAL, "internal error"

    def _observe(self, method: str, code: grpc.StatusCode, started: float) -> None:
        elapsed = time.perf_counter() - started
        GRPC_REQUESTS.labels(self._service, method, code.name).observe(elapsed)
        # A call that ends well, or because its client left, is not news.
        level = (logging.DEBUG if code in (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED)
                 else logging.INFO)
        log.log(level, "rpc", extra={"method": method, "code": code.name,
                                     "duration_ms": round(elapsed * 1000, 3)})


def server_credentials(tls: GrpcTlsSettings) -> grpc.ServerCredentials:
    assert tls.cert_file and tls.key_file
    key = Path(tls.key_file).read_bytes()
    cert = Path(tls.cert_file).read_bytes()
    ca = Path(tls.ca_file).read_bytes() if tls.ca_file else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
    )


@dataclass
class GrpcServer:
    """A built server: start it, drain it (health NOT_SERVING, calls still answered), and stop
    it gracefully (GOAWAY, calls in flight finish within the grace)."""

    server: aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: tuple[str, ...]

    async def start(self) -> None:
        await self.server.start()
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)

    async def drain(self) -> None:
        """Reports ``NOT_SERVING``: clients watching health stop sending new calls here, and a
        readiness probe fails, while calls that still arrive are answered."""
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        await self.drain()
        await self.server.stop(grace)

    async def _set_health(self, status: Any) -> None:
        for name in ("", *self.service_names):
            await self.health.set(name, status)


def create_server(
    *,
    service: str,
    add_servicers: Callable[[aio.Server], Sequence[str]],
    host: str,
    port: int,
    tls: GrpcTlsSettings | None = None,
    max_connection_age: float = MAX_CONNECTION_AGE_SECONDS,
    max_connection_age_grace: float = MAX_CONNECTION_AGE_GRACE_SECONDS,
    interceptors: Sequence[aio.ServerInterceptor] = (),
) -> GrpcServer:
    """Builds a server with the health service, bound to ``host:port`` (0 picks a free port).

    ``add_servicers`` registers the service's servicers and returns their full names, which the
    health service reports as SERVING once the server starts. ``interceptors`` run inside the
    one that maps errors (so a refusal they decide is logged and counted like any status).
    ``max_connection_age`` (seconds) is shortened only by tests.
    """
    server = aio.server(
        interceptors=[ServiceInterceptor(service), *interceptors],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
            ("grpc.max_connection_age_ms", int(max_connection_age * 1000)),
            ("grpc.max_connection_age_grace_ms", int(max_connection_age_grace * 1000)),
        ],
    )
    names = tuple(add_servicers(server))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = f"{host}:{port}"
    if tls is not None and tls.enabled:
        bound = server.add_secure_port(address, server_credentials(tls))
    else:
        bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"cannot bind gRPC on {address}")
    return GrpcServer(server=server, port=bound, health=health_servicer, service_names=names)

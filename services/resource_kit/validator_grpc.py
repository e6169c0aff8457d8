"""Validation by asking the token service (``TokenService.ValidateToken`` over gRPC).

One channel per process, balanced per call over every replica the target names (a headless
Service's ``dns:///`` name; see :mod:`services.common.grpc_client`); every call has a deadline;
``UNAVAILABLE`` is retried by the channel's retry policy (a restarting or draining token replica
is invisible to callers) and, when it persists, raised as :class:`TokenServiceUnavailable`. The
request id of the current request travels along.
"""

from __future__ import annotations

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from otesse.auth.v1 import token_pb2, token_pb2_grpc
from services.common.grpc_client import create_channel
from services.common.settings import GrpcTlsSettings
from services.common.token_reasons import FROM_PROTO
from services.resource_kit.cache import PositiveCache
from services.resource_kit.validation import (
    TokenServiceUnavailable,
    ValidatedToken,
    Validation,
    check_scopes,
)


class GrpcTokenValidator:
    def __init__(self, target: str, *, timeout: float = 2.0, cache_seconds: float = 0.0,
                 cache_entries: int = 10_000, tls: GrpcTlsSettings | None = None) -> None:
        self._channel: aio.Channel = create_channel(
            target, services=("otesse.auth.v1.TokenService",), tls=tls)
        self._stub = token_pb2_grpc.TokenServiceStub(self._channel)
        self._timeout = timeout
        self._cache = (PositiveCache(ttl=cache_seconds, max_entries=cache_entries)
                       if cache_seconds > 0 else None)

    async def validate(self, token: str, *, required_scopes: tuple[str, ...] = ()
                       ) -> Validation:
        if self._cache is not None:
            cached = self._cache.get(token)
            if cached is not None:
                return check_scopes(cached, required_scopes)
        try:
            response = await self._stub.ValidateToken(
                token_pb2.ValidateTokenRequest(token=token, required_scopes=required_scopes),
                timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise TokenServiceUnavailable(exc.code().name) from None
        reason = FROM_PROTO.get(response.reason, "malformed")
        validated = None
        if response.subject:
            validated = ValidatedToken(
                subject=response.subject, client_id=response.client_id,
                scopes=frozenset(response.scopes),
                expires_at=response.expires_at.seconds, grant_id=response.grant_id,
                token_id=response.token_id)
        if validated is not None and reason in ("valid", "insufficient_scope") \
                and self._cache is not None:
            self._cache.put(token, validated)
        return Validation(response.active and reason == "valid", reason, validated)

    async def ping(self) -> None:
        response = await health_pb2_grpc.HealthStub(self._channel).Check(
            health_pb2.HealthCheckRequest(service="otesse.auth.v1.TokenService"),
            timeout=self._timeout)
        if response.status != health_pb2.HealthCheckResponse.SERVING:
            raise TokenServiceUnavailable("token service not serving")

    async def close(self) -> None:
        await self._channel.close()

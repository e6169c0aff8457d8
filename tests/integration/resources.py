"""Where an access token is used once issued: ``TokenService.ValidateToken`` on the token
service's gRPC port (how Otesse's internal services check tokens) and ``GET /v1/bookings`` on
the example bookings API (step 5 of the public documentation)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from otesse.auth.v1 import token_pb2, token_pb2_grpc
from services.common.grpc_client import create_channel
from tests.integration.stack import Stack

VALID = token_pb2.VALIDATION_REASON_VALID
REVOKED = token_pb2.VALIDATION_REASON_REVOKED


class Resources:
    """A gRPC ``TokenService`` stub and an HTTP client for the bookings API."""

    def __init__(self, stack: Stack, token_service: token_pb2_grpc.TokenServiceAsyncStub,
                 http: httpx.AsyncClient) -> None:
        self._stack = stack
        self.token_service = token_service
        self._http = http

    async def validate(self, token: str, *scopes: str) -> token_pb2.ValidateTokenResponse:
        return await self.token_service.ValidateToken(
            token_pb2.ValidateTokenRequest(token=token, required_scopes=list(scopes)))

    async def bookings(self, token: str) -> httpx.Response:
        return await self._http.get(self._stack.bookings + "/v1/bookings",
                                    headers={"Authorization": f"Bearer {token}"})

    async def seconds_until_refused(self, token: str, *, limit: float = 1.0) -> float:
        """How long after now both the gRPC validation and the bookings API refuse ``token``
        (polled); fails the test when that takes longer than ``limit`` seconds."""
        start = time.monotonic()
        while True:
            validation = await self.validate(token, "bookings:read")
            api = await self.bookings(token)
            elapsed = time.monotonic() - start
            if not validation.active and api.status_code == 401:
                return elapsed
            assert elapsed < limit, (validation.reason, api.status_code, api.text)
            await asyncio.sleep(0.02)


@asynccontextmanager
async def resources(stack: Stack) -> AsyncIterator[Resources]:
    channel = create_channel(stack.token_grpc, services=("otesse.auth.v1.TokenService",))
    stub = token_pb2_grpc.TokenServiceStub(channel)
    try:
        async with httpx.AsyncClient(timeout=10.0) as http:
            yield Resources(stack, stub, http)
    finally:
        await channel.close()

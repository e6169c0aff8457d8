"""The request id: created by the gateway, passed on by every service.

Over HTTP it travels in ``X-Request-ID``; over gRPC in the ``x-request-id`` metadata. Inside a
process it lives in :data:`services.common.log.request_id_var`, so every log line carries it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from services.common.log import request_id_var

HEADER = "x-request-id"
# Ids we accept from upstream: short, printable, no separators that could forge log fields.
_VALID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def new_request_id() -> str:
    return secrets.token_hex(16)


def accept_or_new(candidate: str | None) -> str:
    """The caller's id when it is well-formed, else a fresh one."""
    if candidate and _VALID.match(candidate):
        return candidate
    return new_request_id()


def current() -> str:
    return request_id_var.get()


class ClientRequestIdInterceptor(aio.UnaryUnaryClientInterceptor):
    """Adds the current request id to every outgoing unary gRPC call."""

    async def intercept_unary_unary(
        self,
        continuation: Callable[[aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        request_id = request_id_var.get()
        if request_id != "-":
            metadata = aio.Metadata(*(client_call_details.metadata or ()))
            metadata[HEADER] = request_id
            client_call_details = aio.ClientCallDetails(
                client_call_details.method,
                client_call_details.timeout,
                metadata,
                client_call_details.credentials,
                client_call_details.wait_for_ready,
            )
        return await continuation(client_call_details, request)


def from_grpc_metadata(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == HEADER:
            return accept_or_new(value if isinstance(value, str) else None)
    return new_request_id()

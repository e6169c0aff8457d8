"""Errors a gRPC servicer raises; the server interceptor turns each into its status code.

Servicers raise these and never call ``context.abort`` themselves, so every status is decided in
one place (``services.common.grpc_server``) and nothing unexpected leaves as ``UNKNOWN``.
"""

from __future__ import annotations

from typing import ClassVar

import grpc


class RpcError(Exception):
    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(RpcError):
    """A request field is malformed. The message starts with the field's name."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotFound(RpcError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(RpcError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Unauthenticated(RpcError):
    code = grpc.StatusCode.UNAUTHENTICATED


class FailedPrecondition(RpcError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(RpcError):
    code = grpc.StatusCode.UNAVAILABLE


class ResourceExhausted(RpcError):
    """A bounded resource (subscribers of a stream, say) is used up: retry later or elsewhere."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

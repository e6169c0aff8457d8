"""Internal gRPC callers for tests: channels that prove a service's name with a service
credential under the local-development key, the key every service uses with no environment."""

from __future__ import annotations

from grpc import aio

from services.common.service_auth import caller_interceptors
from services.common.settings import Env, ServiceCredentialSettings

DEV_KEY = ServiceCredentialSettings.from_env(Env({})).key_bytes


def as_service(caller: str, audience: str, *, key: bytes = DEV_KEY,
               ) -> list[aio.ClientInterceptor]:
    """The interceptors that make a channel's calls come from ``caller``."""
    return caller_interceptors(key, caller=caller, audience=audience)

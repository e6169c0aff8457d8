"""Registry settings, from the environment (see the README's configuration table)."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.settings import (
    Env,
    ServiceCredentialSettings,
    ServiceSettings,
)


@dataclass(frozen=True)
class RegistrySettings(ServiceSettings):
    grpc_host: str
    grpc_port: int
    http_host: str
    http_port: int
    # Checks the service credentials of callers of the mutating RPCs (DESIGN §5).
    service_credentials: ServiceCredentialSettings
    # How long a rotated-out secret keeps working when the caller does not say.
    secret_overlap_seconds: int

    @classmethod
    def from_env(cls, env: Env | None = None) -> RegistrySettings:
        env = env or Env()
        return cls(
            **ServiceSettings.shared(env),
            grpc_host=env.text("OTESSE_REGISTRY_GRPC_HOST", "127.0.0.1"),
            grpc_port=env.integer("OTESSE_REGISTRY_GRPC_PORT", 50051, maximum=65535),
            http_host=env.text("OTESSE_REGISTRY_HTTP_HOST", "127.0.0.1"),
            http_port=env.integer("OTESSE_REGISTRY_HTTP_PORT", 8003, maximum=65535),
            service_credentials=ServiceCredentialSettings.from_env(env),
            secret_overlap_seconds=env.integer("OTESSE_SECRET_ROTATION_OVERLAP_SECONDS", 3600,
                                           maximum=7 * 24 * 3600),
        )

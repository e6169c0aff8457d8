"""Settings of the example bookings API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from services.common.settings import (
    DEFAULT_ISSUER,
    DEFAULT_TOKEN_GRPC_ADDR,
    ConfigError,
    Env,
    GrpcTlsSettings,
)

Mode = Literal["grpc", "jwks", "local"]


@dataclass(frozen=True)
class BookingsSettings:
    host: str
    port: int
    # How tokens are checked: "grpc" asks the token service (revocation seen at once); "jwks"
    # verifies offline (revocation not seen until the token expires); "local" verifies
    # offline and follows the revocation feed (revocation seen within milliseconds).
    validation: Mode
    token_grpc_addr: str
    tls: GrpcTlsSettings
    # Seconds a positive gRPC answer is reused (0: off). Revocation takes up to this long.
    cache_seconds: float
    jwks_url: str
    # "local": checks answer 503 after this long without word from the revocation feed.
    feed_stale_seconds: float
    issuer: str
    audience: str
    log_level: str

    @classmethod
    def from_env(cls, env: Env | None = None) -> BookingsSettings:
        env = env or Env()
        mode = env.text("OTESSE_BOOKINGS_VALIDATION", "grpc")
        modes: dict[str, Mode] = {"grpc": "grpc", "jwks": "jwks", "local": "local"}
        if mode not in modes:
            raise ConfigError("OTESSE_BOOKINGS_VALIDATION must be grpc, jwks or local, got "
                              f"{mode!r}")
        return cls(
            host=env.text("OTESSE_BOOKINGS_HOST", "127.0.0.1"),
            port=env.integer("OTESSE_BOOKINGS_PORT", 8100, maximum=65535),
            validation=modes[mode],
            token_grpc_addr=env.text("OTESSE_TOKEN_GRPC_ADDR", DEFAULT_TOKEN_GRPC_ADDR),
            tls=GrpcTlsSettings.from_env(env),
            cache_seconds=env.number("OTESSE_BOOKINGS_CACHE_SECONDS", 0.0),
            jwks_url=env.url("OTESSE_BOOKINGS_JWKS_URL",
                             "http://127.0.0.1:8002/.well-known/jwks.json"),
            feed_stale_seconds=env.number("OTESSE_BOOKINGS_FEED_STALE_SECONDS", 5.0,
                                          minimum=0.5),
            issuer=env.url("OTESSE_ISSUER", DEFAULT_ISSUER),
            audience=env.text("OTESSE_TOKEN_AUDIENCE", "https://api.otesse.com"),
            log_level=env.text("OTESSE_LOG_LEVEL", "INFO"),
        )

"""Token service settings, from the environment (see the README's configuration table).

Secure defaults live here, in one place: access tokens live 3600 s and refresh tokens 30 days
(the public documentation promises both); the refresh retry window is 10 s (DESIGN §2.3);
signing keys rotate every 30 days.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from services.common.client_ip import Network
from services.common.grpc_server import MAX_CONNECTION_AGE_SECONDS
from services.common.ratelimit import RateLimit
from services.common.settings import (
    DEFAULT_REGISTRY_ADDR,
    ConfigError,
    Env,
    Secret,
    ServiceCredentialSettings,
    ServiceSettings,
)

# Local development only: anyone can read this key, so keys encrypted under it are not secret.
# Production MUST set OTESSE_TOKEN_KEK; the service logs a warning at start-up when it is unset.
DEV_KEK = base64.b64encode(b"otesse-local-development-kek-32b").decode("ascii")

DAY = 24 * 3600


def decode_kek(name: str, secret: Secret) -> bytes:
    """The key-encryption key: base64 of exactly 32 bytes (AES-256)."""
    try:
        raw = base64.b64decode(secret.value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ConfigError(f"{name} must be base64 of exactly 32 random bytes")
    return raw


@dataclass(frozen=True)
class TokenSettings(ServiceSettings):
    http_host: str
    http_port: int
    # The public listener running the gateway's edge in this process (None: not served; 0: a
    # free port). The ingress sends the token service's public paths there.
    edge_host: str
    edge_port: int | None
    grpc_host: str
    grpc_port: int
    # Checks the service credentials of callers of grant administration (DESIGN §5).
    service_credentials: ServiceCredentialSettings
    # The tokens' ``aud``: the resource servers behind api.otesse.com.
    audience: str
    kek: Secret
    kek_is_default: bool
    access_token_ttl: int
    refresh_token_ttl: int
    # How long a rotated refresh token may be presented again for the same pair (0 = off).
    refresh_retry_window: int
    # How often the signing key rotates by itself (0 = only by ``otesse-auth keys rotate``).
    key_rotation_seconds: int
    # How often each replica re-reads the signing keys from Postgres.
    key_refresh_seconds: float
    # How often each replica re-asserts recent revocations in the Redis deny-list.
    denylist_sync_seconds: float
    # How long a successful client authentication is remembered in-process.
    client_auth_cache_seconds: float
    # Access tokens whose verified signature each replica remembers (0: verify every time).
    verified_cache_size: int
    max_body_bytes: int
    # Token requests per authenticated confidential client (None: no limit).
    rate_per_client: RateLimit | None
    # A rate-limit check slower than this fails open (Redis slow or down).
    rate_redis_timeout: float
    registry_addr: str
    # X-Forwarded-For is believed only from these peers (the gateway): the client's address
    # in the audit trail.
    trusted_proxies: tuple[Network, ...]
    # WatchRevocations subscribers one replica serves at once; the next is refused.
    feed_max_subscribers: int
    # gRPC connections (and the revocation streams on them) are closed after this long, so
    # clients re-resolve the service; subscribers resume from their cursor.
    grpc_max_connection_age: float

    @property
    def kek_bytes(self) -> bytes:
        return decode_kek("OTESSE_TOKEN_KEK", self.kek)

    @classmethod
    def from_env(cls, env: Env | None = None) -> TokenSettings:
        env = env or Env()
        kek = env.secret("OTESSE_TOKEN_KEK", DEV_KEK)
        decode_kek("OTESSE_TOKEN_KEK", kek)
        settings = cls(
            **ServiceSettings.shared(env),
            http_host=env.text("OTESSE_TOKEN_HTTP_HOST", "127.0.0.1"),
            http_port=env.integer("OTESSE_TOKEN_HTTP_PORT", 8002, maximum=65535),
            edge_host=env.text("OTESSE_TOKEN_EDGE_HOST", "127.0.0.1"),
            edge_port=(None if env.text("OTESSE_TOKEN_EDGE_PORT", "off").lower() == "off"
                       else env.integer("OTESSE_TOKEN_EDGE_PORT", maximum=65535)),
            grpc_host=env.text("OTESSE_TOKEN_GRPC_HOST", "127.0.0.1"),
            grpc_port=env.integer("OTESSE_TOKEN_GRPC_PORT", 50052, maximum=65535),
            service_credentials=ServiceCredentialSettings.from_env(env),
            audience=env.text("OTESSE_TOKEN_AUDIENCE", "https://api.otesse.com"),
            kek=kek,
            kek_is_default=kek.value == DEV_KEK,
            access_token_ttl=env.integer("OTESSE_TOKEN_ACCESS_TTL_SECONDS", 3600, minimum=60,
                                         maximum=DAY),
            refresh_token_ttl=env.integer("OTESSE_TOKEN_REFRESH_TTL_SECONDS", 30 * DAY,
                                          minimum=60, maximum=365 * DAY),
            refresh_retry_window=env.integer("OTESSE_TOKEN_REFRESH_RETRY_WINDOW_SECONDS", 10,
                                             maximum=300),
            key_rotation_seconds=env.integer("OTESSE_TOKEN_KEY_ROTATION_SECONDS", 30 * DAY,
                                             maximum=365 * DAY),
            key_refresh_seconds=env.number("OTESSE_TOKEN_KEY_REFRESH_SECONDS", 30.0,
                                           minimum=0.05),
            denylist_sync_seconds=env.number("OTESSE_TOKEN_DENYLIST_SYNC_SECONDS", 10.0,
                                             minimum=0.05),
            client_auth_cache_seconds=env.number("OTESSE_TOKEN_CLIENT_AUTH_CACHE_SECONDS", 5.0),
            verified_cache_size=env.integer("OTESSE_TOKEN_VERIFIED_CACHE_SIZE", 10_000,
                                            maximum=1_000_000),
            max_body_bytes=env.integer("OTESSE_TOKEN_MAX_BODY_BYTES", 16 * 1024, minimum=1024,
                                       maximum=1024 * 1024),
            rate_per_client=RateLimit.parse("OTESSE_TOKEN_RATE_PER_CLIENT",
                                            env.text("OTESSE_TOKEN_RATE_PER_CLIENT", "600/60")),
            rate_redis_timeout=env.number("OTESSE_TOKEN_RATE_REDIS_TIMEOUT_SECONDS", 0.25,
                                          minimum=0.01),
            registry_addr=env.text("OTESSE_REGISTRY_ADDR", DEFAULT_REGISTRY_ADDR),
            trusted_proxies=env.networks("OTESSE_TOKEN_TRUSTED_PROXIES",
                                         ("127.0.0.1/32", "::1/128")),
            feed_max_subscribers=env.integer("OTESSE_TOKEN_FEED_MAX_SUBSCRIBERS", 256,
                                             minimum=1, maximum=100_000),
            grpc_max_connection_age=MAX_CONNECTION_AGE_SECONDS,
        )
        if settings.edge_port and settings.edge_port in (settings.http_port,
                                                         settings.grpc_port):
            raise ConfigError("OTESSE_TOKEN_EDGE_PORT must differ from OTESSE_TOKEN_HTTP_PORT "
                              "and OTESSE_TOKEN_GRPC_PORT")
        if settings.key_rotation_seconds and settings.key_rotation_seconds < 2 * (
                settings.access_token_ttl + settings.key_refresh_seconds):
            raise ConfigError("OTESSE_TOKEN_KEY_ROTATION_SECONDS must be 0 or at least twice "
                              "the access-token lifetime plus the key refresh interval")
        return settings

    @property
    def key_retirement_seconds(self) -> int:
        """How long a key stays published after it stops signing: a replica may still sign
        with it until its next refresh, then the token lives ``access_token_ttl``."""
        return self.access_token_ttl + int(self.key_refresh_seconds) + CLOCK_SKEW_SECONDS

    @property
    def key_publish_lead_seconds(self) -> float:
        """How long a key must have been published before it may sign: every replica has
        re-read the keys and every JWKS cache has expired since."""
        return JWKS_MAX_AGE_SECONDS + self.key_refresh_seconds + CLOCK_SKEW_SECONDS


# How long resource servers may cache the JWKS (its Cache-Control max-age).
JWKS_MAX_AGE_SECONDS = 300
# Allowance for clocks of replicas, Postgres and resource servers that disagree slightly.
CLOCK_SKEW_SECONDS = 60

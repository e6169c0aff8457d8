"""Gateway settings, from the environment (see the README's configuration table).

Rate limits are written ``COUNT/SECONDS`` (a token bucket holding ``COUNT`` requests, refilled
evenly over ``SECONDS``); ``0`` or ``off`` turns one off.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from services.common.settings import ConfigError, Env, StoreSettings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class RateLimit:
    """At most ``count`` requests at once, refilled at ``count / seconds`` per second."""

    count: int
    seconds: float

    @property
    def refill_per_second(self) -> float:
        return self.count / self.seconds

    @classmethod
    def parse(cls, name: str, raw: str) -> RateLimit | None:
        text = raw.strip().lower()
        if text in ("0", "off"):
            return None
        count, slash, seconds = text.partition("/")
        try:
            limit = cls(int(count), float(seconds) if slash else 60.0)
        except ValueError:
            limit = cls(0, 0.0)
        if limit.count < 1 or limit.seconds <= 0:
            raise ConfigError(f"{name} must be COUNT/SECONDS (e.g. 30/60) or off, got {raw!r}")
        return limit


@dataclass(frozen=True)
class GatewaySettings:
    stores: StoreSettings
    host: str
    port: int
    # /healthz, /readyz and /metrics live here, never on the public port.
    admin_host: str
    admin_port: int
    authorize_url: str
    token_url: str
    # Host header values answered; an entry without a port matches any port.
    allowed_hosts: tuple[str, ...]
    # Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (the load balancer).
    trusted_proxies: tuple[Network, ...]
    max_body_bytes: int
    max_header_bytes: int
    max_url_bytes: int
    connect_timeout: float
    upstream_timeout: float
    upstream_max_connections: int
    hsts_max_age: int
    rate_login_per_ip: RateLimit | None
    rate_token_per_ip: RateLimit | None
    rate_token_per_client: RateLimit | None
    # A rate-limit check slower than this fails open (Redis slow or down).
    rate_redis_timeout: float
    log_level: str
    drain_seconds: float

    @classmethod
    def from_env(cls, env: Env | None = None) -> GatewaySettings:
        env = env or Env()

        def rate(name: str, default: str) -> RateLimit | None:
            return RateLimit.parse(name, env.text(name, default))

        return cls(
            stores=StoreSettings.from_env(env),
            host=env.text("OTESSE_GATEWAY_HOST", "127.0.0.1"),
            port=env.integer("OTESSE_GATEWAY_PORT", 8000, maximum=65535),
            admin_host=env.text("OTESSE_GATEWAY_ADMIN_HOST", "127.0.0.1"),
            admin_port=env.integer("OTESSE_GATEWAY_ADMIN_PORT", 8010, maximum=65535),
            authorize_url=env.url("OTESSE_GATEWAY_AUTHORIZE_URL", "http://127.0.0.1:8001"),
            token_url=env.url("OTESSE_GATEWAY_TOKEN_URL", "http://127.0.0.1:8002"),
            allowed_hosts=tuple(h.lower() for h in env.items(
                "OTESSE_GATEWAY_ALLOWED_HOSTS", ("localhost", "127.0.0.1"))),
            trusted_proxies=env.networks("OTESSE_GATEWAY_TRUSTED_PROXIES",
                                         ("127.0.0.0/8", "::1/128")),
            max_body_bytes=env.integer("OTESSE_GATEWAY_MAX_BODY_BYTES", 4 * 1024 * 1024,
                                       minimum=1024),
            max_header_bytes=env.integer("OTESSE_GATEWAY_MAX_HEADER_BYTES", 16 * 1024,
                                         minimum=1024),
            max_url_bytes=env.integer("OTESSE_GATEWAY_MAX_URL_BYTES", 8 * 1024, minimum=256),
            connect_timeout=env.number("OTESSE_GATEWAY_CONNECT_TIMEOUT_SECONDS", 2.0,
                                       minimum=0.01),
            upstream_timeout=env.number("OTESSE_GATEWAY_UPSTREAM_TIMEOUT_SECONDS", 30.0,
                                        minimum=0.01),
            upstream_max_connections=env.integer("OTESSE_GATEWAY_UPSTREAM_MAX_CONNECTIONS", 100,
                                                 minimum=1),
            hsts_max_age=env.integer("OTESSE_GATEWAY_HSTS_MAX_AGE_SECONDS", 31536000),
            rate_login_per_ip=rate("OTESSE_GATEWAY_RATE_LOGIN_PER_IP", "30/60"),
            rate_token_per_ip=rate("OTESSE_GATEWAY_RATE_TOKEN_PER_IP", "300/60"),
            rate_token_per_client=rate("OTESSE_GATEWAY_RATE_TOKEN_PER_CLIENT", "600/60"),
            rate_redis_timeout=env.number("OTESSE_GATEWAY_RATE_REDIS_TIMEOUT_SECONDS", 0.25,
                                          minimum=0.01),
            log_level=env.text("OTESSE_LOG_LEVEL", "INFO"),
            drain_seconds=env.number("OTESSE_SHUTDOWN_DRAIN_SECONDS", 0.0),
        )

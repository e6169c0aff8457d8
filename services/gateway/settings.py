"""Gateway settings, from the environment (see the README's configuration table).

Rate limits are written ``COUNT/SECONDS`` (a token bucket holding ``COUNT`` requests, refilled
evenly over ``SECONDS``); ``0`` or ``off`` turns one off.

Body caps are per kind of route (DESIGN §9): the token service's endpoints take 16 KiB, browser
form posts 64 KiB (a sign-in form carries the authorization request it returns to, which a
long URL makes long), and only the two app-registration forms that upload a logo take more
(the authorize service's own cap, ``services/authorize/app_form.py``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from services.common.ratelimit import RateLimit
from services.common.settings import ConfigError, Env, ServiceSettings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

KIB = 1024
# A form with the largest logo (1 MiB) and every text field full (authorize's MAX_FORM_BYTES).
UPLOAD_BODY_BYTES = 1024 * KIB + 256 * KIB


@dataclass(frozen=True)
class GatewaySettings(ServiceSettings):
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
    # The largest request body, by kind of route (413 past it).
    max_token_body_bytes: int
    max_form_body_bytes: int
    max_upload_body_bytes: int
    # Bytes of upload bodies held at once, all clients together (503 past it).
    upload_buffer_bytes: int
    max_header_bytes: int
    max_url_bytes: int
    connect_timeout: float
    upstream_timeout: float
    upstream_max_connections: int
    # From a connection's start (or a request's first byte) to the end of its headers.
    header_timeout: float
    # From the end of the headers to the end of the body.
    body_timeout: float
    max_connections: int
    # Connections per peer address; trusted proxies speak for many clients and are exempt.
    max_connections_per_ip: int
    # Requests in flight per client address (as resolved through trusted proxies).
    max_requests_per_ip: int
    hsts_max_age: int
    rate_login_per_ip: RateLimit | None
    rate_token_per_ip: RateLimit | None
    # Failed client authentications (token, revocation, introspection) per client address.
    rate_client_auth_failures_per_ip: RateLimit | None
    # A rate-limit check slower than this fails open (Redis slow or down).
    rate_redis_timeout: float

    @classmethod
    def from_env(cls, env: Env | None = None) -> GatewaySettings:
        env = env or Env()

        def rate(name: str, default: str) -> RateLimit | None:
            return RateLimit.parse(name, env.text(name, default))

        return cls(
            **ServiceSettings.shared(env),
            host=env.text("OTESSE_GATEWAY_HOST", "127.0.0.1"),
            port=env.integer("OTESSE_GATEWAY_PORT", 8000, maximum=65535),
            admin_host=env.text("OTESSE_GATEWAY_ADMIN_HOST", "127.0.0.1"),
            admin_port=env.integer("OTESSE_GATEWAY_ADMIN_PORT", 8010, maximum=65535),
            authorize_url=_upstream_url(env, "OTESSE_GATEWAY_AUTHORIZE_URL",
                                        "http://127.0.0.1:8001"),
            token_url=_upstream_url(env, "OTESSE_GATEWAY_TOKEN_URL", "http://127.0.0.1:8002"),
            allowed_hosts=tuple(h.lower() for h in env.items(
                "OTESSE_GATEWAY_ALLOWED_HOSTS", ("localhost", "127.0.0.1"))),
            trusted_proxies=env.networks("OTESSE_GATEWAY_TRUSTED_PROXIES",
                                         ("127.0.0.0/8", "::1/128")),
            max_token_body_bytes=env.integer("OTESSE_GATEWAY_MAX_TOKEN_BODY_BYTES", 16 * KIB,
                                             minimum=KIB, maximum=1024 * KIB),
            max_form_body_bytes=env.integer("OTESSE_GATEWAY_MAX_FORM_BODY_BYTES", 64 * KIB,
                                            minimum=KIB, maximum=1024 * KIB),
            max_upload_body_bytes=env.integer("OTESSE_GATEWAY_MAX_UPLOAD_BODY_BYTES",
                                              UPLOAD_BODY_BYTES, minimum=KIB,
                                              maximum=64 * 1024 * KIB),
            upload_buffer_bytes=env.integer("OTESSE_GATEWAY_UPLOAD_BUFFER_BYTES",
                                            64 * 1024 * KIB, minimum=KIB),
            max_header_bytes=env.integer("OTESSE_GATEWAY_MAX_HEADER_BYTES", 16 * 1024,
                                         minimum=1024),
            max_url_bytes=env.integer("OTESSE_GATEWAY_MAX_URL_BYTES", 8 * 1024, minimum=256),
            connect_timeout=env.number("OTESSE_GATEWAY_CONNECT_TIMEOUT_SECONDS", 2.0,
                                       minimum=0.01),
            upstream_timeout=env.number("OTESSE_GATEWAY_UPSTREAM_TIMEOUT_SECONDS", 30.0,
                                        minimum=0.01),
            upstream_max_connections=env.integer("OTESSE_GATEWAY_UPSTREAM_MAX_CONNECTIONS", 100,
                                                 minimum=1),
            header_timeout=env.number("OTESSE_GATEWAY_HEADER_TIMEOUT_SECONDS", 10.0,
                                      minimum=0.05),
            body_timeout=env.number("OTESSE_GATEWAY_BODY_TIMEOUT_SECONDS", 10.0, minimum=0.05),
            max_connections=env.integer("OTESSE_GATEWAY_MAX_CONNECTIONS", 4096, minimum=1),
            max_connections_per_ip=env.integer("OTESSE_GATEWAY_MAX_CONNECTIONS_PER_IP", 256,
                                               minimum=1),
            max_requests_per_ip=env.integer("OTESSE_GATEWAY_MAX_REQUESTS_PER_IP", 32, minimum=1),
            hsts_max_age=env.integer("OTESSE_GATEWAY_HSTS_MAX_AGE_SECONDS", 31536000),
            rate_login_per_ip=rate("OTESSE_GATEWAY_RATE_LOGIN_PER_IP", "30/60"),
            rate_token_per_ip=rate("OTESSE_GATEWAY_RATE_TOKEN_PER_IP", "300/60"),
            rate_client_auth_failures_per_ip=rate(
                "OTESSE_GATEWAY_RATE_CLIENT_AUTH_FAILURES_PER_IP", "30/60"),
            rate_redis_timeout=env.number("OTESSE_GATEWAY_RATE_REDIS_TIMEOUT_SECONDS", 0.25,
                                          minimum=0.01),
        )


def _upstream_url(env: Env, name: str, default: str) -> str:
    """An upstream's URL: ``http://`` only. The upstreams are the services inside the cluster,
    which listen without TLS, and the gateway's client speaks plain HTTP/1.1 to them."""
    url = env.url(name, default)
    if not url.startswith("http://"):
        raise ConfigError(f"{name} must be an http:// URL (the gateway speaks plain HTTP to "
                          f"the services behind it), got {url!r}")
    return url

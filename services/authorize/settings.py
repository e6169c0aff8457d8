"""Authorize service settings, from the environment (see the README's configuration table)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from services.common.client_ip import Network
from services.common.settings import (
    DEFAULT_REGISTRY_ADDR,
    DEFAULT_TOKEN_GRPC_ADDR,
    Env,
    ServiceCredentialSettings,
    ServiceSettings,
)


@dataclass(frozen=True)
class LoginThrottleSettings:
    """Brute-force protection of ``POST /login`` (RFC 6819 §4.4.3.6; OWASP ASVS V2.2.1; OWASP
    device cookies: see :mod:`services.authorize.devices`)."""

    # Failures (of any one counter below) answered at once; each further one waits longer.
    slowdown_after: int
    # The first wait; it doubles with every further failure, up to slowdown_max_seconds.
    slowdown_seconds: float
    slowdown_max_seconds: float
    # Failures on one account (known or not) from unknown devices that lock it, for unknown
    # devices only, for lock_seconds.
    account_lock_after: int
    # Failures from one client IP that lock that IP for lock_seconds.
    ip_lock_after: int
    # How long failures are remembered, and how long a lock lasts.
    lock_seconds: int
    # Failures on one account from one client IP (unknown devices) that lock that pair.
    account_ip_lock_after: int
    # Failures from one known device of the account that lock that device.
    device_lock_after: int
    # How long a device cookie (and its record) lives after the sign-in that issued it.
    device_seconds: int


@dataclass(frozen=True)
class AuthorizeSettings(ServiceSettings):
    host: str
    port: int
    registry_addr: str
    # The token service's gRPC address (TokenService: ListGrants and RevokeGrant for the
    # settings pages); the same TLS settings as the registry channel apply.
    token_addr: str
    # Proves this service's name ("authorize") to the token service and the registry.
    service_credentials: ServiceCredentialSettings
    session_idle_seconds: int
    session_absolute_seconds: int
    login: LoginThrottleSettings
    # X-Forwarded-For is believed only from these peers (the gateway, an ingress).
    trusted_proxies: tuple[Network, ...]
    client_cache_seconds: float
    client_cache_size: int

    @property
    def secure_cookies(self) -> bool:
        """Cookies are ``Secure`` unless the issuer is plain http (local development)."""
        return urlsplit(self.issuer).scheme != "http"

    @classmethod
    def from_env(cls, env: Env | None = None) -> AuthorizeSettings:
        env = env or Env()
        return cls(
            **ServiceSettings.shared(env),
            host=env.text("OTESSE_AUTHORIZE_HOST", "127.0.0.1"),
            port=env.integer("OTESSE_AUTHORIZE_PORT", 8001, maximum=65535),
            registry_addr=env.text("OTESSE_REGISTRY_ADDR", DEFAULT_REGISTRY_ADDR),
            token_addr=env.text("OTESSE_TOKEN_GRPC_ADDR", DEFAULT_TOKEN_GRPC_ADDR),
            service_credentials=ServiceCredentialSettings.from_env(env),
            session_idle_seconds=env.integer("OTESSE_AUTHORIZE_SESSION_IDLE_SECONDS", 1800,
                                             minimum=60),
            session_absolute_seconds=env.integer("OTESSE_AUTHORIZE_SESSION_ABSOLUTE_SECONDS",
                                                 12 * 3600, minimum=60),
            login=LoginThrottleSettings(
                slowdown_after=env.integer("OTESSE_AUTHORIZE_LOGIN_SLOWDOWN_AFTER", 3),
                slowdown_seconds=env.number("OTESSE_AUTHORIZE_LOGIN_SLOWDOWN_SECONDS", 0.5),
                slowdown_max_seconds=env.number("OTESSE_AUTHORIZE_LOGIN_SLOWDOWN_MAX_SECONDS",
                                                8.0),
                account_lock_after=env.integer("OTESSE_AUTHORIZE_LOGIN_ACCOUNT_LOCK_AFTER", 10,
                                               minimum=1),
                ip_lock_after=env.integer("OTESSE_AUTHORIZE_LOGIN_IP_LOCK_AFTER", 100,
                                          minimum=1),
                lock_seconds=env.integer("OTESSE_AUTHORIZE_LOGIN_LOCK_SECONDS", 900,
                                         minimum=1),
                account_ip_lock_after=env.integer(
                    "OTESSE_AUTHORIZE_LOGIN_ACCOUNT_IP_LOCK_AFTER", 5, minimum=1),
                device_lock_after=env.integer("OTESSE_AUTHORIZE_LOGIN_DEVICE_LOCK_AFTER", 10,
                                              minimum=1),
                device_seconds=env.integer("OTESSE_AUTHORIZE_DEVICE_COOKIE_SECONDS",
                                           180 * 24 * 3600, minimum=60,
                                           maximum=400 * 24 * 3600),
            ),
            trusted_proxies=env.networks("OTESSE_AUTHORIZE_TRUSTED_PROXIES",
                                         ("127.0.0.1/32", "::1/128")),
            client_cache_seconds=env.number("OTESSE_AUTHORIZE_CLIENT_CACHE_SECONDS", 5.0),
            client_cache_size=env.integer("OTESSE_AUTHORIZE_CLIENT_CACHE_SIZE", 256, minimum=1),
        )

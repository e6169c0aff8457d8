"""Configuration from ``OTESSE_…`` environment variables, read once at start-up.

Each service declares a frozen dataclass of its settings and builds it with an :class:`Env`
reader. A missing or malformed variable raises :class:`ConfigError` whose message is one line
naming the variable; ``otesse-auth serve`` prints it and exits. Nothing else reads
``os.environ``. With no variables set, every service and the CLI agree on local defaults, so the
CLI talks to the stack ``make run`` started.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypedDict, TypeVar
from urllib.parse import urlsplit

from services.common.redis_lean import Endpoint

T = TypeVar("T")


class ConfigError(Exception):
    """A setting is missing or malformed. ``str()`` is one line naming the variable."""


@dataclass(frozen=True)
class Secret:
    """A secret setting: its ``repr`` and ``str`` never show the value."""

    value: str

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


class Env:
    """Typed reads of ``OTESSE_…`` variables with defaults."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def _parse(self, name: str, default: T | None, parse: Callable[[str], T], what: str) -> T:
        raw = self._environ.get(name)
        if raw is None or raw == "":
            if default is None:
                raise ConfigError(f"{name} is required but not set")
            return default
        try:
            return parse(raw.strip())
        except ValueError as exc:
            detail = f" ({exc})" if str(exc) else ""
            raise ConfigError(f"{name} must be {what}{detail}, got {raw!r}") from None

    def text(self, name: str, default: str | None = None) -> str:
        return self._parse(name, default, _nonempty, "a non-empty string")

    def secret(self, name: str, default: str | None = None) -> Secret:
        raw = self._environ.get(name) or default
        if not raw:
            raise ConfigError(f"{name} is required but not set")
        return Secret(raw)

    def integer(self, name: str, default: int | None = None, *, minimum: int = 0,
            maximum: int | None = None) -> int:
        def parse(raw: str) -> int:
            value = int(raw)
            if value < minimum or (maximum is not None and value > maximum):
                bound = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
                raise ValueError(f"range {bound}")
            return value

        return self._parse(name, default, parse, "an integer")

    def number(self, name: str, default: float | None = None, *, minimum: float = 0.0) -> float:
        def parse(raw: str) -> float:
            value = float(raw)
            if value < minimum:
                raise ValueError(f"range >= {minimum}")
            return value

        return self._parse(name, default, parse, "a number")

    def flag(self, name: str, default: bool | None = None) -> bool:
        def parse(raw: str) -> bool:
            lowered = raw.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError("")

        return self._parse(name, default, parse, "true or false")

    def url(self, name: str, default: str | None = None, *,
            schemes: tuple[str, ...] = ("http", "https")) -> str:
        def parse(raw: str) -> str:
            parts = urlsplit(raw)
            if parts.scheme not in schemes or not parts.netloc:
                raise ValueError(f"scheme {'/'.join(schemes)}")
            return raw.rstrip("/") if parts.scheme in ("http", "https") else raw

        return self._parse(name, default, parse, "an absolute URL")

    def refuse(self, retired: Mapping[str, str]) -> None:
        """Stops start-up when a retired variable is set, naming what replaced it."""
        for name, replacement in retired.items():
            if self._environ.get(name):
                raise ConfigError(f"{name} is no longer read: set {replacement} instead")

    def items(self, name: str, default: tuple[str, ...] | None = None) -> tuple[str, ...]:
        return self._parse(name, default, _comma_list, "a comma-separated list")

    def networks(self, name: str, default: tuple[str, ...] = ()) -> tuple[
            ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        def parse(raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
            return tuple(ipaddress.ip_network(item, strict=False) for item in _comma_list(raw))

        raw_default = tuple(ipaddress.ip_network(item, strict=False) for item in default)
        return self._parse(name, raw_default, parse, "a comma-separated list of CIDR networks")


def _nonempty(raw: str) -> str:
    if not raw:
        raise ValueError("")
    return raw


def _comma_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


# Local defaults shared by every service and the CLI.
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/otesse"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_ISSUER = "http://localhost:8000"
DEFAULT_REGISTRY_ADDR = "127.0.0.1:50051"
DEFAULT_TOKEN_GRPC_ADDR = "127.0.0.1:50052"


@dataclass(frozen=True)
class StoreSettings:
    """Where the shared stores are; every service that uses one reads these."""

    database_url: Secret
    redis_url: Secret
    # Every Redis key starts with this, so runs (and tests) can share one Redis server.
    redis_prefix: str
    db_pool_min: int
    db_pool_max: int
    # The rate limits' counters (services.common.ratelimit) on a Redis of their own
    # (OTESSE_RATE_LIMIT_REDIS_URL); None: on redis_url. Redis runs commands on one core, and
    # with the limits on their scripts are most of what it does per token request.
    rate_limit_redis_url: Secret | None = None

    @property
    def rate_limit_redis(self) -> Secret:
        """The Redis URL of the rate limits' counters."""
        return self.rate_limit_redis_url or self.redis_url

    @classmethod
    def from_env(cls, env: Env) -> StoreSettings:
        prefix = env.text("OTESSE_REDIS_PREFIX", "otesse:")
        redis_url = _redis_url(env, "OTESSE_REDIS_URL", DEFAULT_REDIS_URL)
        rate_limit_url = _redis_url(env, "OTESSE_RATE_LIMIT_REDIS_URL", redis_url.value)
        return cls(
            database_url=env.secret("OTESSE_DATABASE_URL", DEFAULT_DATABASE_URL),
            redis_url=redis_url,
            redis_prefix=prefix,
            db_pool_min=env.integer("OTESSE_DB_POOL_MIN", 2, minimum=0),
            db_pool_max=env.integer("OTESSE_DB_POOL_MAX", 10, minimum=1),
            rate_limit_redis_url=None if rate_limit_url == redis_url else rate_limit_url,
        )


def _redis_url(env: Env, name: str, default: str) -> Secret:
    url = env.secret(name, default)
    try:
        Endpoint.from_url(url.value)
    except ValueError as exc:
        # The message names what is wrong, never the URL (it may hold the password).
        raise ConfigError(f"{name}: {exc}") from None
    return url


@dataclass(frozen=True)
class GrpcTlsSettings:
    """TLS for gRPC, a configuration switch: all three files set → TLS (mutual when ca is set)."""

    cert_file: str | None
    key_file: str | None
    ca_file: str | None

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None and self.key_file is not None

    @classmethod
    def from_env(cls, env: Env) -> GrpcTlsSettings:
        def optional(name: str) -> str | None:
            value = env.text(name, "-")
            return None if value == "-" else value

        tls = cls(
            cert_file=optional("OTESSE_GRPC_TLS_CERT"),
            key_file=optional("OTESSE_GRPC_TLS_KEY"),
            ca_file=optional("OTESSE_GRPC_TLS_CA"),
        )
        if (tls.cert_file is None) != (tls.key_file is None):
            raise ConfigError("OTESSE_GRPC_TLS_CERT and OTESSE_GRPC_TLS_KEY must be set together")
        return tls


# Local development only: anyone can read this key, so credentials signed with it prove
# nothing. Production MUST set OTESSE_SERVICE_CREDENTIAL_KEY; services warn at start-up.
DEV_SERVICE_CREDENTIAL_KEY = base64.b64encode(b"otesse-local-development-svc-key").decode("ascii")


@dataclass(frozen=True)
class ServiceCredentialSettings:
    """The key of internal gRPC service credentials (:mod:`services.common.service_auth`):
    base64 of at least 32 random bytes, shared by the services that mint or check them."""

    key: Secret

    @property
    def is_default(self) -> bool:
        return self.key.value == DEV_SERVICE_CREDENTIAL_KEY

    @property
    def key_bytes(self) -> bytes:
        return base64.b64decode(self.key.value, validate=True)

    @classmethod
    def from_env(cls, env: Env) -> ServiceCredentialSettings:
        name = "OTESSE_SERVICE_CREDENTIAL_KEY"
        key = env.secret(name, DEV_SERVICE_CREDENTIAL_KEY)
        try:
            raw = base64.b64decode(key.value.strip(), validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) < 32:
            raise ConfigError(f"{name} must be base64 of at least 32 random bytes")
        return cls(key=Secret(key.value.strip()))


@dataclass(frozen=True)
class AuditSettings:
    """The audit trail's retention: ``otesse-auth purge`` deletes events older than this."""

    retention_days: int

    @classmethod
    def from_env(cls, env: Env) -> AuditSettings:
        # At least a day: the table refuses to delete anything younger (its migration).
        return cls(retention_days=env.integer("OTESSE_AUDIT_RETENTION_DAYS", 400, minimum=1,
                                              maximum=36500))


# Settings no longer read, and what replaced each: a deployment still setting one would believe
# it in force, so start-up stops and names the replacement instead of ignoring it.
RETIRED: dict[str, str] = {
    "OTESSE_GATEWAY_RATE_TOKEN_PER_CLIENT":
        "the token service's OTESSE_TOKEN_RATE_PER_CLIENT (a client is charged once the token "
        "service has authenticated it)",
    "OTESSE_GATEWAY_MAX_BODY_BYTES":
        "OTESSE_GATEWAY_MAX_TOKEN_BODY_BYTES, OTESSE_GATEWAY_MAX_FORM_BODY_BYTES and "
        "OTESSE_GATEWAY_MAX_UPLOAD_BODY_BYTES (one cap per kind of route)",
}


class _Shared(TypedDict):
    stores: StoreSettings
    issuer: str
    tls: GrpcTlsSettings
    log_level: str
    drain_seconds: float


@dataclass(frozen=True, kw_only=True)
class ServiceSettings:
    """What every service has, read the same way by each: the stores, the issuer, gRPC TLS,
    the log level and the SIGTERM drain. A service's settings subclass this and add only their
    own fields; ``from_env`` passes ``**ServiceSettings.shared(env)`` along."""

    stores: StoreSettings
    # Exactly the string in metadata ``issuer``, the ``iss`` parameter and the tokens' ``iss``
    # claim (DESIGN §7).
    issuer: str
    tls: GrpcTlsSettings
    log_level: str
    # How long to keep serving after SIGTERM, answering not-ready (services.common.serve).
    drain_seconds: float

    @staticmethod
    def shared(env: Env) -> _Shared:
        """The shared fields; first refuses any :data:`RETIRED` setting still set."""
        env.refuse(RETIRED)
        return _Shared(
            stores=StoreSettings.from_env(env),
            issuer=env.url("OTESSE_ISSUER", DEFAULT_ISSUER),
            tls=GrpcTlsSettings.from_env(env),
            log_level=env.text("OTESSE_LOG_LEVEL", "INFO"),
            drain_seconds=env.number("OTESSE_SHUTDOWN_DRAIN_SECONDS", 0.0),
        )

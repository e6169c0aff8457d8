"""Writing the audit trail: durable security events in Postgres (``audit.events``; its migration
says why every service may append to that one schema).

The promise: **an event commits in the same transaction as the change it records, and never
holds a secret.**

* Where there is a change, the event is written by the change's own statement, as one more
  data-modifying CTE built by :func:`insert_from` — a grant and its ``token.issued`` row, a
  rotation and its ``token.issued`` row, a revocation and its ``grant.revoked`` rows — so
  neither commits without the other, and the hot paths (a code exchange, a refresh) stay one
  statement with no extra round trip. Statements that already run in a transaction (key
  rotation) add the event as one more statement of it.
* An event that records no change (a failed sign-in) is one INSERT of its own
  (:class:`PgAuditLog`).
* A row holds Postgres' time, the type, the actor (:class:`Actor`), the user the event is about,
  the client, the grant, the client's IP and the request id (:class:`Origin`), and small
  details. Details use a fixed vocabulary of keys (:data:`DETAIL_KEYS`) with short values, and
  a value shaped like an Otesse token or secret is refused before anything is written (a bug,
  not an input): tokens, codes, secrets and passwords have no field to go into, and nothing a
  visitor typed into a failed sign-in is kept in any form.

Over gRPC, the authorize service says which signed-in user it acts for and from which address
(:func:`on_behalf`); a callee believes that only from a caller proven to be the authorize
service, and records the operator CLI's calls as the operator's (:func:`from_grpc`).

Every event written is counted in ``otesse_audit_events_total{type}`` (:func:`counted`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol, get_args

from grpc import aio
from prometheus_client import Counter

from services.common import client_ip, service_auth
from services.common.log import request_id_var, scrub

EventType = Literal[
    "sign_in.succeeded", "sign_in.failed", "sign_in.locked",
    "consent.granted", "consent.revoked",
    "code.replayed", "refresh_token.reused",
    "grant.revoked", "access_token.revoked", "token.issued",
    "client.registered", "client.updated", "client.deleted", "client.secret_rotated",
    "signing_key.rotated",
]
EVENT_TYPES: Final[tuple[EventType, ...]] = get_args(EventType)
ActorKind = Literal["user", "client", "operator", "system", "anonymous"]
DetailValue = str | int | bool | Sequence[str]

# Every key a row's details may have. A new one is a decision: say here what it holds.
DETAIL_KEYS: Final = frozenset({
    "grant_type",        # token.issued: authorization_code or refresh_token
    "scope",             # token.issued, consent.granted: the scopes, space-separated
    "reason",            # grant.revoked, sign_in.failed: why (a word from a fixed set; a failed
                         # sign-in says unknown_account, wrong_password or account_disabled)
    "device",            # sign_in.*: "known" (a device cookie of the account) or "new"
    "delayed_ms",        # sign_in.*: how long the throttle held the attempt
    "locked_for_seconds",  # sign_in.locked
    "fields",            # client.updated: the names of the fields changed
    "client_type",       # client.registered: confidential or public
    "overlap_seconds",   # client.secret_rotated: how long the previous secret keeps working
    "retired_kid", "current_kid", "next_kid",  # signing_key.rotated: public key ids
    "forced",            # signing_key.rotated: --force
})
_MAX_TEXT = 200
_MAX_ITEMS = 20
_MAX_ID = 128

# gRPC metadata of a call made for a signed-in user (authorize → registry, token).
ON_BEHALF_KEY: Final = "x-otesse-on-behalf-of"
CLIENT_IP_KEY: Final = "x-otesse-client-ip"
# The only caller believed when it names a user; the operator CLI is always the operator.
_SPEAKS_FOR_USERS: Final = "authorize"
_OPERATOR_CALLER: Final = "cli"

EVENTS = Counter("otesse_audit_events_total", "Audit events written, by type.", ["type"])

COLUMNS: Final = ("event_type, actor_kind, actor_id, subject_user_id, client_id, grant_id,"
                  " client_ip, request_id, details")


@dataclass(frozen=True)
class Actor:
    """Who caused an event: a user, a client, an operator (the CLI), the system itself, or an
    anonymous visitor (a sign-in that failed)."""

    kind: ActorKind
    id: str

    @classmethod
    def user(cls, user_id: str) -> Actor:
        return cls("user", user_id)

    @classmethod
    def client(cls, client_id: str) -> Actor:
        return cls("client", client_id)

    @classmethod
    def anonymous(cls) -> Actor:
        """A visitor not signed in: a failed or refused sign-in."""
        return cls("anonymous", "anonymous")

    @classmethod
    def operator(cls) -> Actor:
        return cls("operator", "operator")

    @classmethod
    def system(cls) -> Actor:
        return cls("system", "system")


def _ip(value: str | None) -> str | None:
    """``value`` when it is an IP address, else ``None`` (a peer may be a socket path)."""
    if not value:
        return None
    return _normalised(value)


@functools.lru_cache(maxsize=4096)
def _normalised(value: str) -> str | None:
    # Remembered, as client_ip remembers what it parses: the same few addresses, request after
    # request; client_ip.address refuses long strings before they reach the cache.
    parsed = client_ip.address(value)
    return None if parsed is None else str(parsed)


@dataclass(frozen=True)
class Origin:
    """Where the request behind an event came from: the client's address (as resolved through
    trusted proxies) and the request id. Both optional: a background job has neither."""

    ip: str | None = None
    request_id: str | None = None

    @classmethod
    def of(cls, ip: str | None) -> Origin:
        """The request being served, from ``ip`` (kept only when it is an address)."""
        request_id = request_id_var.get()
        return cls(ip=_ip(ip), request_id=None if request_id == "-" else request_id[:_MAX_ID])


NOWHERE: Final = Origin()


def _checked_text(key: str, value: str) -> str:
    if len(value) > _MAX_TEXT or scrub(value) != value:
        raise ValueError(f"audit detail {key!r} is too long or shaped like a secret")
    return value


def details_json(details: Mapping[str, DetailValue]) -> str:
    """The details as JSON, after checking every key and value (see the module docstring)."""
    checked: dict[str, Any] = {}
    for key, value in details.items():
        if key not in DETAIL_KEYS:
            raise ValueError(f"audit detail {key!r} is not in the vocabulary")
        if isinstance(value, bool | int):
            checked[key] = value
        elif isinstance(value, str):
            checked[key] = _checked_text(key, value)
        else:
            items = list(value)
            if len(items) > _MAX_ITEMS or not all(isinstance(item, str) for item in items):
                raise ValueError(f"audit detail {key!r} must be a short list of strings")
            checked[key] = [_checked_text(key, item) for item in items]
    return json.dumps(checked, separators=(",", ":"), sort_keys=True)


def params(actor: Actor, origin: Origin, details: Mapping[str, DetailValue] | None = None,
           ) -> tuple[str, str, str | None, str | None, str]:
    """The values :func:`insert_from` takes as parameters: actor kind, actor id, client IP,
    request id, details."""
    if not actor.id or len(actor.id) > _MAX_ID:
        raise ValueError("an audit actor needs an id of at most 128 characters")
    return (actor.kind, actor.id, origin.ip, origin.request_id, details_json(details or {}))


def insert_from(event_type: EventType, *, first: int, rows: str, subject: str, client: str,
                grant: str, where: str = "", scope: str = "") -> str:
    """``INSERT INTO audit.events … SELECT … FROM rows``: one event per row of ``rows`` (a CTE
    of the same statement) passing ``where``.

    ``subject``, ``client`` and ``grant`` are SQL expressions over those rows (or parameters,
    or ``NULL``); parameters ``$first`` to ``$first+4`` are :func:`params`. ``scope``, when
    given, is a ``text[]`` expression over the rows: the details' ``scope`` (space-separated),
    for a scope only the statement knows. Everything here is written in code, never from
    input: the type is one of :data:`EVENT_TYPES`.
    """
    p = [f"${first + offset}" for offset in range(5)]
    return _insert(event_type, (f"{p[0]}::text", f"{p[1]}::text", f"{p[2]}::inet",
                                f"{p[3]}::text", p[4]),
                   rows=rows, subject=subject, client=client, grant=grant, where=where,
                   scope=scope)


def insert_from_rows(event_type: EventType, *, rows: str, subject: str, client: str,
                     grant: str, scope: str = "") -> str:
    """:func:`insert_from` for a statement that writes for several requests at once
    (:mod:`services.common.batches`): each row of ``rows`` carries its own actor, origin
    and details, as columns ``actor_kind``, ``actor_id``, ``client_ip`` (``inet``),
    ``request_id`` and ``details`` (``text``, from :func:`params` like the rest)."""
    return _insert(event_type, ("actor_kind", "actor_id", "client_ip", "request_id", "details"),
                   rows=rows, subject=subject, client=client, grant=grant, scope=scope)


def _insert(event_type: EventType, values: tuple[str, str, str, str, str], *, rows: str,
            subject: str, client: str, grant: str, where: str = "", scope: str = "") -> str:
    """The statement of :func:`insert_from` and :func:`insert_from_rows`; ``values`` are the
    SQL of :func:`params`' five values (actor kind, actor id, client IP, request id, details
    as text)."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown audit event type {event_type!r}")
    kind, actor, ip, request_id, details = values
    details = f"{details}::jsonb"
    if scope:
        details = f"({details} || jsonb_build_object('scope', array_to_string({scope}, ' ')))"
    return (f"INSERT INTO audit.events ({COLUMNS})"
            f" SELECT '{event_type}', {kind}, {actor}, {subject}, {client}, {grant},"
            f" {ip}, {request_id}, {details} FROM {rows}"
            + (f" WHERE {where}" if where else ""))


def counted(event_type: EventType, n: int = 1) -> None:
    """Counts ``n`` events of ``event_type`` written (call after the statement succeeded)."""
    if n:
        EVENTS.labels(event_type).inc(n)


@dataclass(frozen=True)
class Event:
    """An event that records no change of its own (a sign-in attempt): written alone."""

    type: EventType
    actor: Actor
    origin: Origin
    subject_user_id: str | None = None
    client_id: str | None = None
    grant_id: str | None = None
    details: Mapping[str, DetailValue] = field(default_factory=dict)


_INSERT_ONE = (f"INSERT INTO audit.events ({COLUMNS})"
               " VALUES ($1, $2, $3, $4, $5, $6::uuid, $7::inet, $8, $9::jsonb)")


class Executor(Protocol):
    """A pool, or a connection inside a transaction."""

    async def execute(self, query: str, *args: object) -> str: ...


async def write(executor: Executor, event: Event) -> None:
    """One INSERT of ``event``: in a transaction when ``executor`` is a connection inside one
    (the caller counts it once that commits)."""
    if event.type not in EVENT_TYPES:
        raise ValueError(f"unknown audit event type {event.type!r}")
    kind, actor_id, ip, request_id, details = params(event.actor, event.origin, event.details)
    await executor.execute(_INSERT_ONE, event.type, kind, actor_id, event.subject_user_id,
                           event.client_id, event.grant_id, ip, request_id, details)


class PgAuditLog:
    """Writes events that stand alone. Write-only: reading is for the CLI and the app owner's
    page (:mod:`services.common.audit_search`)."""

    def __init__(self, pool: Executor) -> None:
        self._pool = pool

    async def record(self, event: Event) -> None:
        await write(self._pool, event)
        counted(event.type)


def on_behalf(user_id: str, origin: Origin) -> tuple[tuple[str, str], ...]:
    """gRPC metadata saying the call is made for ``user_id``, whose request came from
    ``origin`` (the request id travels on its own, :mod:`services.common.request_id`)."""
    metadata = [(ON_BEHALF_KEY, user_id)]
    if origin.ip:
        metadata.append((CLIENT_IP_KEY, origin.ip))
    return tuple(metadata)


def _metadata(context: aio.ServicerContext[Any, Any], key: str) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == key and isinstance(value, str):
            return value
    return None


def _peer_ip(peer: str) -> str | None:
    """The address of a gRPC peer: ``ipv4:10.0.0.7:5123`` or ``ipv6:[::1]:5123``."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return _ip(rest.rpartition(":")[0])
    if kind == "ipv6":
        return _ip(rest.rpartition(":")[0].strip("[]"))
    return None


def from_grpc(context: aio.ServicerContext[Any, Any]) -> tuple[Actor, Origin]:
    """Who is behind the gRPC call being served, and from where.

    The authorize service acting for a signed-in user names them (:func:`on_behalf`): the user
    is the actor and their address the origin. That is believed only when the caller proved it
    is the authorize service; anyone else's claim is ignored. The operator CLI is the operator,
    at its connection's address; any other proven service is the system.
    """
    callers = service_auth.proven_callers()
    request_id = request_id_var.get()
    rid = None if request_id == "-" else request_id
    if _SPEAKS_FOR_USERS in callers:
        user_id = _metadata(context, ON_BEHALF_KEY)
        if user_id and len(user_id) <= _MAX_ID and user_id.isprintable():
            return Actor.user(user_id), Origin(ip=_ip(_metadata(context, CLIENT_IP_KEY)),
                                               request_id=rid)
    if _OPERATOR_CALLER in callers:
        return Actor.operator(), Origin(ip=_peer_ip(context.peer() or ""), request_id=rid)
    return Actor.system(), Origin(request_id=rid)

"""Who is calling: internal gRPC callers proven by name and checked per method (DESIGN §5).

Validating a token is open to every resource server; administering grants or clients is the
privilege of named services. Each gRPC server holds a policy table, full method name → the
callers allowed (or :data:`ANY_CALLER`), and one :class:`AccessPolicyInterceptor` enforces it
on every call. A method missing from the table is refused: a new RPC is closed until someone
decides who may call it. The standard health service is always open.

A caller proves its name in either of two ways, and may use both:

* **mTLS** — the names of the client certificate the TLS handshake verified (subject
  alternative DNS names and the common name); a name's first label is the service, so
  ``authorize`` and ``authorize.otesse-auth.svc.cluster.local`` both name ``authorize``;
* a **service credential** in the ``x-otesse-service-credential`` metadata, for where TLS is
  off or one-way: ``v1.<payload>.<mac>``, the payload base64url JSON ``{"sub": caller,
  "aud": called service, "exp": Unix time}`` and the mac its HMAC-SHA256 under
  ``OTESSE_SERVICE_CREDENTIAL_KEY``. Callers mint one per audience, valid one minute, and send
  it on every call (:func:`caller_interceptors`); the server checks the mac in
  constant time, the audience, the expiry, and that it was not minted for longer than
  :data:`MAX_LIFETIME_SECONDS`. The key is shared only by the services that mint or check
  credentials (authorize, token, registry, the operator CLI) — never by resource servers — so
  a credential is only as good as that circle; within TLS it cannot be read off the wire.

A call that passes the check runs with its proven names in :func:`proven_callers`, so the
method can tell who asked (the audit trail records an operator's change as the operator's, and
believes the user a caller names only from the authorize service).

Refusals: ``UNAUTHENTICATED`` when no name is proven (nothing sent, or a credential that is
malformed, forged, expired, for another audience or signed with another key — a credential
that does not verify is never ignored); ``PERMISSION_DENIED`` when the proven caller may not
call that method. Neither says more than that; the log says which and why, never the
credential.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import inspect
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from typing import Any, Final

import grpc
from grpc import aio

log = logging.getLogger("otesse.grpc.access")

METADATA_KEY: Final = "x-otesse-service-credential"
# Anyone, authenticated or not (a policy value).
ANY_CALLER: Final = frozenset({"*"})
LIFETIME_SECONDS: Final = 60
MAX_LIFETIME_SECONDS: Final = 300
CLOCK_SKEW_SECONDS: Final = 30
_MAX_CREDENTIAL_LENGTH = 1024
_VERSION = "v1"
_DOMAIN = b"otesse service credential v1\n"
_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")
_HEALTH_PREFIX = "/grpc.health.v1.Health/"

Policy = Mapping[str, frozenset[str]]
# The names proven by the call being served (empty for a method open to anyone).
_PROVEN: ContextVar[frozenset[str]] = ContextVar("proven_callers", default=frozenset())
DEV_CREDENTIAL_WARNING: Final = (
    "OTESSE_SERVICE_CREDENTIAL_KEY is not set: internal gRPC callers are authenticated with the "
    "PUBLIC local-development key. Set OTESSE_SERVICE_CREDENTIAL_KEY in production.")


class CredentialRejected(Exception):
    """A service credential that does not verify; ``str()`` says why (for the log)."""


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def _mac(key: bytes, signed: str) -> bytes:
    return hmac.new(key, _DOMAIN + signed.encode("ascii"), hashlib.sha256).digest()


def mint(key: bytes, *, caller: str, audience: str, now: float | None = None,
         lifetime: int = LIFETIME_SECONDS) -> str:
    """A credential naming ``caller`` to ``audience``, valid ``lifetime`` seconds."""
    if not _NAME.fullmatch(caller) or not _NAME.fullmatch(audience):
        raise ValueError("service names are lower-case letters, digits and '-'")
    issued = int(time.time() if now is None else now)
    payload = _b64encode(json.dumps({"sub": caller, "aud": audience, "exp": issued + lifetime},
                                    separators=(",", ":")).encode("ascii"))
    signed = f"{_VERSION}.{payload}"
    return f"{signed}.{_b64encode(_mac(key, signed))}"


def verify(key: bytes, credential: str, *, audience: str, now: float | None = None) -> str:
    """The caller a credential names; raises :class:`CredentialRejected`."""
    if len(credential) > _MAX_CREDENTIAL_LENGTH:
        raise CredentialRejected("too long")
    version, _, rest = credential.partition(".")
    payload, _, mac = rest.partition(".")
    if version != _VERSION or not payload or not mac:
        raise CredentialRejected("malformed")
    try:
        presented = _b64decode(mac)
        expected = _mac(key, f"{version}.{payload}")
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise CredentialRejected("malformed") from None
    if not hmac.compare_digest(presented, expected):
        raise CredentialRejected("bad signature")
    try:
        claims = json.loads(_b64decode(payload))
        caller, aud, expires = claims["sub"], claims["aud"], claims["exp"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise CredentialRejected("malformed") from None
    if not isinstance(caller, str) or not _NAME.fullmatch(caller) or not isinstance(
            expires, int) or isinstance(expires, bool):
        raise CredentialRejected("malformed")
    if aud != audience:
        raise CredentialRejected("wrong audience")
    current = time.time() if now is None else now
    if expires <= current - CLOCK_SKEW_SECONDS:
        raise CredentialRejected("expired")
    if expires > current + MAX_LIFETIME_SECONDS + CLOCK_SKEW_SECONDS:
        raise CredentialRejected("lifetime too long")
    return caller


def certificate_names(auth_context: Mapping[str, Iterable[bytes]]) -> set[str]:
    """The services a verified TLS client certificate names (empty without mTLS)."""
    if b"ssl" not in set(auth_context.get("transport_security_type", ())):
        return set()
    names = set()
    for key in ("x509_subject_alternative_name", "x509_common_name"):
        for raw in auth_context.get(key, ()):
            label = raw.decode("utf-8", "replace").split(".", 1)[0].lower()
            if _NAME.fullmatch(label):
                names.add(label)
    return names


def _credential_from(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key == METADATA_KEY:
            return value if isinstance(value, str) else value.decode("ascii", "replace")
    return None


class AccessPolicyInterceptor(aio.ServerInterceptor):
    """Refuses every call its ``policy`` does not allow (see the module docstring)."""

    def __init__(self, *, service: str, policy: Policy, key: bytes) -> None:
        self._audience = service
        self._policy = policy
        self._key = key

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        method = details.method
        if handler is None or method.startswith(_HEALTH_PREFIX):
            return handler
        allowed = self._policy.get(method, frozenset())
        if allowed == ANY_CALLER:
            return handler
        credential = _credential_from(details.invocation_metadata)

        async def check(context: aio.ServicerContext[Any, Any]) -> None:
            names = certificate_names(context.auth_context())
            if credential is not None:
                try:
                    names.add(verify(self._key, credential, audience=self._audience))
                except CredentialRejected as exc:
                    log.warning("service call refused: credential rejected", extra={
                        "method": method, "reason": str(exc), "peer": context.peer()})
                    await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                        "the service credential was rejected")
            if not names:
                log.warning("service call refused: no caller identity", extra={
                    "method": method, "peer": context.peer()})
                await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                    "this method needs the caller's service identity")
            if not names & allowed:
                log.warning("service call refused: caller not allowed", extra={
                    "method": method, "caller": ",".join(sorted(names)),
                    "peer": context.peer()})
                await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                    "this caller may not call this method")
            _PROVEN.set(frozenset(names))

        return _guarded(handler, check)


def proven_callers() -> frozenset[str]:
    """The service names the call being served proved (empty when its method is open to anyone,
    and outside a call)."""
    return _PROVEN.get()


def _guarded(handler: grpc.RpcMethodHandler[Any, Any],
             check: Callable[[aio.ServicerContext[Any, Any]], Awaitable[None]],
             ) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler``, with ``check`` run before its behaviour, for all four kinds of RPC."""
    serializers = {"request_deserializer": handler.request_deserializer,
                   "response_serializer": handler.response_serializer}

    async def _stream(produced: Any) -> AsyncIterator[Any]:
        # An aio streaming behaviour is an async generator, or a coroutine that writes.
        if inspect.isasyncgen(produced):
            async for item in produced:
                yield item
        else:
            await produced

    if handler.unary_unary is not None:
        unary_unary = handler.unary_unary

        async def checked_unary_unary(request: Any, context: Any) -> Any:
            await check(context)
            return await unary_unary(request, context)

        return grpc.unary_unary_rpc_method_handler(checked_unary_unary, **serializers)
    if handler.unary_stream is not None:
        unary_stream = handler.unary_stream

        async def checked_unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
            await check(context)
            async for item in _stream(unary_stream(request, context)):
                yield item

        return grpc.unary_stream_rpc_method_handler(checked_unary_stream, **serializers)
    if handler.stream_unary is not None:
        stream_unary = handler.stream_unary

        async def checked_stream_unary(requests: Any, context: Any) -> Any:
            await check(context)
            return await stream_unary(requests, context)

        return grpc.stream_unary_rpc_method_handler(checked_stream_unary, **serializers)
    assert handler.stream_stream is not None
    stream_stream = handler.stream_stream

    async def checked_stream_stream(requests: Any, context: Any) -> AsyncIterator[Any]:
        await check(context)
        async for item in _stream(stream_stream(requests, context)):
            yield item

    return grpc.stream_stream_rpc_method_handler(checked_stream_stream, **serializers)


class CallerCredential:
    """``caller``'s service credential for ``audience``, minted again when half of its life
    is gone."""

    def __init__(self, key: bytes, *, caller: str, audience: str) -> None:
        mint(key, caller=caller, audience=audience)  # names checked now, not at the first call
        self._key = key
        self._caller = caller
        self._audience = audience
        self._credential = ""
        self._renew_at = 0.0

    def current(self) -> str:
        now = time.time()
        if now >= self._renew_at:
            self._credential = mint(self._key, caller=self._caller, audience=self._audience,
                                    now=now)
            self._renew_at = now + LIFETIME_SECONDS / 2
        return self._credential

    def add_to(self, details: aio.ClientCallDetails) -> aio.ClientCallDetails:
        metadata = aio.Metadata(*(details.metadata or ()))
        metadata[METADATA_KEY] = self.current()
        return aio.ClientCallDetails(details.method, details.timeout, metadata,
                                     details.credentials, details.wait_for_ready)


class _UnaryUnaryCredential(aio.UnaryUnaryClientInterceptor):
    def __init__(self, credential: CallerCredential) -> None:
        self._credential = credential

    async def intercept_unary_unary(
        self,
        continuation: Callable[[aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await continuation(self._credential.add_to(client_call_details), request)


class _UnaryStreamCredential(aio.UnaryStreamClientInterceptor):
    def __init__(self, credential: CallerCredential) -> None:
        self._credential = credential

    async def intercept_unary_stream(
        self,
        continuation: Callable[[aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await continuation(self._credential.add_to(client_call_details), request)


def caller_interceptors(key: bytes, *, caller: str, audience: str,
                        ) -> list[aio.ClientInterceptor]:
    """Interceptors that send ``caller``'s credential for ``audience`` on every call of a
    channel, unary and server-streaming alike (a channel files each interceptor under one kind
    of call only, hence one per kind)."""
    credential = CallerCredential(key, caller=caller, audience=audience)
    return [_UnaryUnaryCredential(credential), _UnaryStreamCredential(credential)]

"""``TokenService`` over gRPC (DESIGN §5): validation and the revocation feed for resource
servers, grant management for the authorize service.

Who may call what is :data:`ACCESS`, enforced for every call by
:class:`services.common.service_auth.AccessPolicyInterceptor`.

Errors are raised as :mod:`services.common.rpc_errors`; the server interceptor maps them (and a
Redis or Postgres that is down, to ``UNAVAILABLE``). An unusable token is not an error: it is
``active=false`` with a reason.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio

from otesse.auth.v1 import token_pb2 as pb
from otesse.auth.v1 import token_pb2_grpc
from services.common import audit
from services.common.rpc_errors import InvalidArgument, ResourceExhausted, Unavailable
from services.common.service_auth import ANY_CALLER, Policy
from services.common.token_reasons import TO_PROTO
from services.token.denylist import DenyList
from services.token.metrics import GRANTS_REVOKED
from services.token.revocation_feed import (
    FeedNotReady,
    RevocationFeed,
    Subscription,
    TooManySubscribers,
)
from services.token.revocation_log import TAIL_BATCH, RevocationLog
from services.token.revocations import LoggedRevocation
from services.token.store import GrantStore, RevocationReason, RevokedBy
from services.token.validation import AccessTokenValidator

log = logging.getLogger("otesse.token.feed")
_MAX_ID_LENGTH = 128
_MAX_SUBSCRIBER_NAME = 64
# A subscriber hears at least this often while the feed reads the log.
HEARTBEAT_SECONDS = 1.0
_KINDS = {"grant": pb.REVOCATION_KIND_GRANT, "token": pb.REVOCATION_KIND_TOKEN}
_SERVICE = pb.DESCRIPTOR.services_by_name["TokenService"].full_name
# DESIGN §5: "Grant administration — RevokeGrant (user, client), ListGrants (user) — is a
# different privilege: only the authorize service may call it […] A resource server can never
# list or revoke anyone's grants." The operator CLI may revoke too (`otesse-auth grants
# revoke`), as it may change clients: it holds the same key.
ACCESS: Policy = {
    f"/{_SERVICE}/ValidateToken": ANY_CALLER,
    # The feed tells what ValidateToken's answers would: open to the same callers, every
    # resource server (DESIGN §5). What it reveals (ids of revoked grants and tokens) grants
    # nothing; what it costs is bounded (subscribers per replica, a queue per subscriber).
    f"/{_SERVICE}/WatchRevocations": ANY_CALLER,
    f"/{_SERVICE}/RevokeGrant": frozenset({"authorize", "cli"}),
    f"/{_SERVICE}/ListGrants": frozenset({"authorize"}),
}


def _timestamp(value: datetime | int | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    if isinstance(value, int):
        stamp.FromSeconds(value)
    else:
        stamp.FromDatetime(value)
    return stamp


def _optional_id(field: str, value: str) -> str | None:
    if not value:
        return None
    if len(value) > _MAX_ID_LENGTH:
        raise InvalidArgument(field, f"at most {_MAX_ID_LENGTH} characters")
    if not value.isprintable():
        raise InvalidArgument(field, "must be printable")
    return value


def _event(entry: LoggedRevocation, *, snapshot: bool) -> pb.RevocationEvent:
    revocation = pb.Revocation(cursor=entry.cursor, kind=_KINDS[entry.kind], id=entry.value,
                               snapshot=snapshot)
    revocation.relevant_until.FromMicroseconds(int(entry.relevant_until * 1_000_000))
    return pb.RevocationEvent(revocation=revocation)


class TokenServiceServicer(token_pb2_grpc.TokenServiceServicer):
    def __init__(self, *, validator: AccessTokenValidator, store: GrantStore,
                 denylist: DenyList, feed: RevocationFeed, revocation_log: RevocationLog,
                 heartbeat_seconds: float = HEARTBEAT_SECONDS) -> None:
        self._validator = validator
        self._store = store
        self._denylist = denylist
        self._feed = feed
        self._log = revocation_log
        self._heartbeat = heartbeat_seconds

    async def ValidateToken(self, request: pb.ValidateTokenRequest,
                            context: aio.ServicerContext[Any, Any]) -> pb.ValidateTokenResponse:
        validation = await self._validator.validate(request.token, request.required_scopes)
        response = pb.ValidateTokenResponse(active=validation.active,
                                            reason=TO_PROTO[validation.reason])
        claims = validation.claims
        if claims is not None:
            response.subject = claims.sub
            response.client_id = claims.client_id
            response.scopes.extend(claims.scopes)
            response.expires_at.FromSeconds(claims.exp)
            response.issued_at.FromSeconds(claims.iat)
            response.grant_id = claims.grant_id
            response.token_id = claims.jti
        return response

    async def RevokeGrant(self, request: pb.RevokeGrantRequest,
                          context: aio.ServicerContext[Any, Any]) -> pb.RevokeGrantResponse:
        grant_id = _optional_id("grant_id", request.grant_id)
        if grant_id is not None:
            try:
                grant_id = str(uuid.UUID(grant_id))
            except ValueError:
                raise InvalidArgument("grant_id", "must be a grant id (a UUID)") from None
        user_id = _optional_id("user_id", request.user_id)
        client_id = _optional_id("client_id", request.client_id)
        if grant_id is None and user_id is None and client_id is None:
            raise InvalidArgument("grant_id", "give grant_id, or user_id and/or client_id")
        actor, origin = audit.from_grpc(context)
        reason: RevocationReason = "operator"
        if actor.kind == "user":
            # The authorize service revokes for a user in two ways only: one app from
            # Authorized apps (user and client), or every grant of an app its owner deletes.
            reason = "user_revoked_app" if user_id is not None else "app_deleted"
        result = await self._store.revoke_grants(
            grant_id=grant_id, user_id=user_id, client_id=client_id,
            by=RevokedBy(actor=actor, reason=reason, origin=origin))
        GRANTS_REVOKED.labels("revoke_grant").inc(result.revoked)
        await self._denylist.deny(result.deny)
        return pb.RevokeGrantResponse(revoked_grants=result.revoked)

    async def ListGrants(self, request: pb.ListGrantsRequest,
                         context: aio.ServicerContext[Any, Any]) -> pb.ListGrantsResponse:
        user_id = _optional_id("user_id", request.user_id)
        if user_id is None:
            raise InvalidArgument("user_id", "is required")
        grants = await self._store.list_grants(user_id=user_id)
        return pb.ListGrantsResponse(grants=[
            pb.Grant(grant_id=grant.grant_id, user_id=grant.user_id, client_id=grant.client_id,
                     scopes=grant.scopes, created_at=_timestamp(grant.created_at),
                     last_used_at=_timestamp(grant.last_used_at),
                     expires_at=_timestamp(grant.expires_at))
            for grant in grants])

    async def WatchRevocations(self, request: pb.WatchRevocationsRequest,
                               context: aio.ServicerContext[Any, Any],
                               ) -> AsyncIterator[pb.RevocationEvent]:
        name = request.subscriber
        if len(name) > _MAX_SUBSCRIBER_NAME or not name.isprintable():
            raise InvalidArgument("subscriber", f"at most {_MAX_SUBSCRIBER_NAME} printable "
                                                "characters")
        try:
            subscription = self._feed.subscribe()
        except TooManySubscribers:
            raise ResourceExhausted("this replica has as many subscribers as it serves; "
                                    "retry, or use another replica") from None
        except FeedNotReady:
            raise Unavailable("the revocation feed is not reading the log; retry "
                              "shortly") from None
        log.info("revocation subscriber joined", extra={
            "subscriber": name, "cursor": request.cursor, "subscribers": self._feed.subscribers})
        try:
            async for event in self._watch(subscription, request.cursor, name):
                yield event
        finally:
            self._feed.unsubscribe(subscription)

    async def _watch(self, subscription: Subscription, cursor: int, name: str,
                     ) -> AsyncIterator[pb.RevocationEvent]:
        # Registered first, caught up second: whatever commits meanwhile is in both, and sent
        # once (cursors only go up).
        if await self._log.start(cursor) == "snapshot":
            snapshot = await self._log.snapshot()
            for entry in snapshot.revocations:
                yield _event(entry, snapshot=True)
            cursor = snapshot.head
            yield pb.RevocationEvent(synced=pb.Synced(cursor=cursor, snapshot=True))
        else:
            while True:
                rows = await self._log.tail(cursor)
                for entry in rows:
                    yield _event(entry, snapshot=False)
                if rows:
                    cursor = rows[-1].cursor
                if len(rows) < TAIL_BATCH:
                    break
            yield pb.RevocationEvent(synced=pb.Synced(cursor=cursor, snapshot=False))
        while True:
            entries: Sequence[LoggedRevocation] = await subscription.take(self._heartbeat)
            if subscription.cut:
                log.info("revocation subscriber cut off (too slow, or this replica stops); "
                         "it resumes from its cursor", extra={"subscriber": name})
                raise Unavailable("this subscription ended (too far behind, or the replica "
                                  "is stopping); resume from the last cursor")
            for entry in entries:
                if entry.cursor > cursor:
                    yield _event(entry, snapshot=False)
                    cursor = entry.cursor
            # Heard only while the feed reads the log: silence tells the subscriber that what
            # it holds may be behind.
            if not entries and self._feed.fresh:
                head = self._feed.head
                if subscription.idle and head is not None:
                    cursor = max(cursor, head)
                yield pb.RevocationEvent(heartbeat=pb.Heartbeat(cursor=cursor))

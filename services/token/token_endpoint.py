"""The token endpoint, ``POST /oauth/token`` (RFC 6749 §3.2, §5): parse, authenticate the
client, charge its budget (:mod:`services.token.client_budget`), dispatch to the grant named by
``grant_type``, answer with ``no-store``.

Errors are raised as :mod:`services.common.errors` classes and rendered by the app's one JSON
error handler (RFC 6749 §5.2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from services.common import client_ip
from services.common.audit import Origin
from services.common.client_ip import Network
from services.common.errors import InvalidRequest, UnsupportedGrantType
from services.common.http import NO_STORE
from services.token import params
from services.token.client_auth import ClientAuthenticator
from services.token.client_budget import ClientBudget
from services.token.grants.base import Grant
from services.token.metrics import TOKENS_ISSUED


class TokenEndpoint:
    def __init__(self, *, grants: Sequence[Grant[Any]], authenticator: ClientAuthenticator,
                 max_body_bytes: int, trusted_proxies: Sequence[Network],
                 budget: ClientBudget | None = None) -> None:
        self._grants: dict[str, Grant[Any]] = {grant.grant_type: grant for grant in grants}
        self._authenticator = authenticator
        self._max_body_bytes = max_body_bytes
        self._trusted_proxies = trusted_proxies
        self._budget = budget

    @property
    def grant_types(self) -> list[str]:
        return list(self._grants)

    async def handle(self, request: Request) -> Response:
        values = await params.read(request, max_bytes=self._max_body_bytes)
        grant_type = values.get("grant_type")
        if grant_type is None:
            raise InvalidRequest("The grant_type parameter is required.")
        grant = self._grants.get(grant_type)
        if grant is None:
            raise UnsupportedGrantType(f"Supported grant types: {', '.join(self._grants)}.")
        client = await self._authenticator.authenticate(
            authorization=request.headers.get("authorization"), params=values)
        if self._budget is not None:
            # Charged to the client only now that it is authenticated, and before the grant
            # consumes anything.
            await self._budget.charge(client)
        origin = Origin.of(client_ip.of_request(request, self._trusted_proxies))
        body = await grant.handle(values, client, origin)
        TOKENS_ISSUED.labels(grant.grant_type).inc()
        # RFC 6749 §5.1: "The authorization server MUST include the HTTP "Cache-Control"
        # response header field with a value of "no-store" in any response containing tokens".
        return Response(body, media_type="application/json", headers=NO_STORE)

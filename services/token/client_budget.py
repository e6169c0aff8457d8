"""The per-client budget of token requests (DESIGN §9: "Limits are charged to the party that is
known: per IP always, per client only once the token service has authenticated that client").

The token endpoint charges a client's bucket right after authenticating it and before any side
effect (a code consumed, a refresh token rotated): a request that names a client without
proving it is that client never touches its budget, so junk sent in a victim's name cannot
exhaust it. Public clients prove nothing by naming themselves (their proof, PKCE, comes with the
grant), so they have no budget of their own: they are limited per address at the gateway, like
everyone.

Cost: one Redis round trip (the token-bucket script of :mod:`services.common.ratelimit`) per
token request of a confidential client; none when the limit is off. Redis slow or down fails
open, logged and counted (``otesse_token_rate_limit_fail_open_total``), as at the gateway.
"""

from __future__ import annotations

import math

from services.common.errors import TooManyRequests
from services.common.ratelimit import Bucket, RateLimit, RateLimiter
from services.token.client_auth import AuthenticatedClient


class ClientBudget:
    def __init__(self, limiter: RateLimiter, limit: RateLimit) -> None:
        self._limiter = limiter
        self._limit = limit

    async def charge(self, client: AuthenticatedClient) -> None:
        """Takes one request from an authenticated client's bucket; 429 when it is empty."""
        if client.method == "none":
            return
        decision = await self._limiter.take([Bucket("token_client", client.client_id,
                                                    self._limit)])
        if not decision.allowed:
            raise TooManyRequests("Too many token requests for this client; retry after the "
                                  "time in the Retry-After header.",
                                  retry_after=max(1, math.ceil(decision.retry_after)))

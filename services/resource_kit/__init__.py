"""The resource-server kit: how Otesse's internal services check access tokens.

Protect a starlette endpoint::

    from services.resource_kit import GrpcTokenValidator, requires_scopes

    validator = GrpcTokenValidator("127.0.0.1:50052")      # one per process, in the lifespan
    app.state.token_validator = validator

    @requires_scopes("bookings:read")
    async def list_bookings(request):
        token = request.state.token                        # a ValidatedToken
        ...

``GrpcTokenValidator`` asks the token service (``TokenService.ValidateToken``): revocation takes
effect at once. With ``cache_seconds`` > 0 it remembers positive answers that long, so a revoked
token may keep working for up to that many seconds in this process. ``JwksTokenValidator``
verifies offline against the published keys: no call per request, but revocation is never seen
(a revoked token works until it expires, at most one hour). ``LocalTokenValidator`` has both:
it verifies locally with the published keys and follows the token service's revocation feed,
so a revocation is refused within milliseconds, and it answers 503 whenever it has not heard
from the feed for a few seconds. Choose per service.
"""

from services.resource_kit.bearer import requires_scopes
from services.resource_kit.validation import (
    TokenServiceUnavailable,
    TokenValidator,
    ValidatedToken,
    Validation,
)
from services.resource_kit.validator_grpc import GrpcTokenValidator
from services.resource_kit.validator_jwks import JwksTokenValidator
from services.resource_kit.validator_local import LocalTokenValidator

__all__ = [
    "GrpcTokenValidator",
    "JwksTokenValidator",
    "LocalTokenValidator",
    "TokenServiceUnavailable",
    "TokenValidator",
    "ValidatedToken",
    "Validation",
    "requires_scopes",
]

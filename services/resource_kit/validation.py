"""What a validator answers, and the one interface every validator shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from services.common.token_reasons import Reason


@dataclass(frozen=True)
class ValidatedToken:
    """The facts of a token whose signature verified."""

    subject: str
    client_id: str
    scopes: frozenset[str]
    expires_at: int
    grant_id: str
    token_id: str


@dataclass(frozen=True)
class Validation:
    active: bool
    reason: Reason
    token: ValidatedToken | None = None


class TokenServiceUnavailable(Exception):
    """The token could not be checked (the token service or the JWKS is unreachable): answer
    503, never 401, so a client does not throw away a good token."""


class TokenValidator(Protocol):
    async def validate(self, token: str, *, required_scopes: tuple[str, ...] = ()
                       ) -> Validation: ...

    async def ping(self) -> None:
        """Raises when the token service (or the JWKS) cannot be reached: for /readyz."""

    async def close(self) -> None: ...


def check_scopes(token: ValidatedToken, required_scopes: tuple[str, ...]) -> Validation:
    if not token.scopes.issuperset(required_scopes):
        return Validation(False, "insufficient_scope", token)
    return Validation(True, "valid", token)

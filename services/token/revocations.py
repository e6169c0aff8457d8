"""What a revocation is, for everything that records, caches or streams one (RFC 7009 §2).

The store returns these, the Redis deny-list caches them (:mod:`services.token.denylist`), and
the revocation log streams them in commit order to resource servers
(:mod:`services.token.revocation_log`, :mod:`services.token.revocation_feed`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class GrantRevocation:
    grant_id: str
    revoked_at: float  # Unix time


@dataclass(frozen=True)
class TokenRevocation:
    jti: str
    expires_at: float  # Unix time


@dataclass(frozen=True)
class Revocations:
    grants: Sequence[GrantRevocation]
    tokens: Sequence[TokenRevocation]


# "grant": every access token of a grant (by the token's grant_id claim); "token": one access
# token (by its jti).
RevocationKind = Literal["grant", "token"]


@dataclass(frozen=True)
class LoggedRevocation:
    """One row of the revocation log: ``cursor`` orders rows by commit."""

    cursor: int
    kind: RevocationKind
    value: str
    # Unix time of the expiry of the newest access token the revocation covers.
    relevant_until: float

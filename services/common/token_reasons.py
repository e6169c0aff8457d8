"""Why an access token is or is not active: the one vocabulary of the token service's
validation, ``ValidateToken``'s ``ValidationReason``, the resource kit and its RFC 6750 answers.

Every reason but ``valid`` is a refusal; ``insufficient_scope`` is a 403 (RFC 6750 §3.1), every
other refusal a 401 ``invalid_token``. A reason added here must be added to the proto enum and
to :data:`DESCRIPTIONS` (tests/common/test_token_reasons.py checks both).
"""

from __future__ import annotations

from typing import Final, Literal, get_args

from otesse.auth.v1 import token_pb2 as pb

Reason = Literal["valid", "malformed", "bad_signature", "expired", "revoked",
                 "insufficient_scope", "wrong_issuer_or_audience"]
REASONS: Final[tuple[Reason, ...]] = get_args(Reason)

TO_PROTO: Final[dict[Reason, pb.ValidationReason.ValueType]] = {
    "valid": pb.VALIDATION_REASON_VALID,
    "malformed": pb.VALIDATION_REASON_MALFORMED,
    "bad_signature": pb.VALIDATION_REASON_BAD_SIGNATURE,
    "expired": pb.VALIDATION_REASON_EXPIRED,
    "revoked": pb.VALIDATION_REASON_REVOKED,
    "insufficient_scope": pb.VALIDATION_REASON_INSUFFICIENT_SCOPE,
    "wrong_issuer_or_audience": pb.VALIDATION_REASON_WRONG_ISSUER_OR_AUDIENCE,
}
FROM_PROTO: Final[dict[int, Reason]] = {value: reason for reason, value in TO_PROTO.items()}

# The error_description of a 401 invalid_token, per refusal (never more than the client needs).
DESCRIPTIONS: Final[dict[Reason, str]] = {
    "malformed": "The access token is malformed.",
    "bad_signature": "The access token is not valid.",
    "expired": "The access token expired.",
    "revoked": "The access token was revoked.",
    "wrong_issuer_or_audience": "The access token is not for this API.",
}

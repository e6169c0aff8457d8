"""The validation-reason vocabulary is defined once and matches the proto enum both ways, and
every refusal has the description the resource kit sends."""

from __future__ import annotations

from otesse.auth.v1 import token_pb2
from services.common import token_reasons


def test_every_reason_has_one_proto_value_and_back() -> None:
    enum_values = {value for name, value in token_pb2.ValidationReason.items()
                   if name != "VALIDATION_REASON_UNSPECIFIED"}
    assert set(token_reasons.TO_PROTO) == set(token_reasons.REASONS)
    assert set(token_reasons.TO_PROTO.values()) == enum_values
    for reason, value in token_reasons.TO_PROTO.items():
        assert token_pb2.ValidationReason.Name(value) == \
            f"VALIDATION_REASON_{reason.upper()}"
        assert token_reasons.FROM_PROTO[value] == reason


def test_every_401_refusal_has_a_description() -> None:
    refusals = set(token_reasons.REASONS) - {"valid", "insufficient_scope"}
    assert set(token_reasons.DESCRIPTIONS) == refusals

"""Credential shapes: prefix, 256 random bits, an offline-checkable checksum."""

from __future__ import annotations

import pytest

from services.common import credentials


@pytest.mark.parametrize("prefix", ["otesse_rt_", "otesse_cs_"])
def test_new_credentials_are_well_formed_and_distinct(prefix: credentials.CredentialPrefix,
                                                      ) -> None:
    values = {credentials.new_credential(prefix) for _ in range(200)}
    assert len(values) == 200
    assert all(credentials.is_well_formed(value, prefix) for value in values)


def test_a_single_changed_character_fails_the_checksum() -> None:
    value = credentials.new_credential("otesse_rt_")
    position = len("otesse_rt_") + 5
    flipped = value[:position] + ("A" if value[position] != "A" else "B") + value[position + 1:]
    assert not credentials.is_well_formed(flipped, "otesse_rt_")
    assert not credentials.is_well_formed(value, "otesse_cs_")
    assert not credentials.is_well_formed(value[:-1], "otesse_rt_")


def test_codes_are_256_bits_and_keyed_by_hash() -> None:
    code = credentials.new_authorization_code()
    assert len(code) == 43
    key = credentials.authorization_code_key("p:", code)
    assert key.startswith("p:authorize:code:") and code not in key

"""The bounded LRU of verified tokens: keyed by digest, least recently used out first, off at 0."""

from __future__ import annotations

import hashlib

import pytest

from services.common.verified_tokens import VerifiedTokens, digest


def test_the_key_is_the_tokens_sha256_not_the_token() -> None:
    token = "otesse_at_header.payload.signature"
    assert digest(token) == hashlib.sha256(token.encode()).digest()
    assert digest(token) != digest(token + "x")
    # A lone surrogate (garbage a caller may send) still has a key, never an exception.
    assert len(digest("otesse_at_\udcff")) == 32


def test_the_least_recently_used_goes_first_when_full() -> None:
    tokens: VerifiedTokens[str] = VerifiedTokens(3)
    for name in "abc":
        tokens.put(digest(name), name)
    assert tokens.get(digest("a")) == "a"  # a is now the most recently used
    tokens.put(digest("d"), "d")
    assert len(tokens) == 3
    assert tokens.get(digest("b")) is None
    assert [tokens.get(digest(name)) for name in "acd"] == ["a", "c", "d"]


def test_put_again_refreshes_and_forget_removes() -> None:
    tokens: VerifiedTokens[int] = VerifiedTokens(2)
    tokens.put(digest("a"), 1)
    tokens.put(digest("b"), 2)
    tokens.put(digest("a"), 3)
    tokens.put(digest("c"), 4)
    assert (tokens.get(digest("a")), tokens.get(digest("b"))) == (3, None)
    tokens.forget(digest("a"))
    tokens.forget(digest("never there"))
    assert tokens.get(digest("a")) is None and len(tokens) == 1


def test_zero_entries_remembers_nothing() -> None:
    tokens: VerifiedTokens[str] = VerifiedTokens(0)
    tokens.put(digest("a"), "a")
    assert len(tokens) == 0 and tokens.get(digest("a")) is None
    with pytest.raises(ValueError):
        VerifiedTokens(-1)


def test_an_entry_idle_too_long_is_forgotten() -> None:
    now = [100.0]
    tokens: VerifiedTokens[str] = VerifiedTokens(10, idle_seconds=30, clock=lambda: now[0])
    tokens.put(digest("a"), "a")
    tokens.put(digest("b"), "b")
    now[0] += 20
    assert tokens.get(digest("a")) == "a"  # used again: a's idle time starts over
    now[0] += 20
    # b, idle 40 s, is gone when asked for; a, idle 20 s, is still there.
    assert tokens.get(digest("b")) is None
    assert tokens.get(digest("a")) == "a"
    assert len(tokens) == 1


def test_a_put_sweeps_the_idle_entries_it_finds_first() -> None:
    now = [0.0]
    tokens: VerifiedTokens[int] = VerifiedTokens(1000, idle_seconds=30, clock=lambda: now[0])
    for n in range(300):
        tokens.put(digest(str(n)), n)
        now[0] += 1
    # Steady traffic of new tokens: the cache holds the last 30 s of them, not all 300.
    assert len(tokens) == 31
    assert tokens.get(digest("299")) == 299 and tokens.get(digest("200")) is None

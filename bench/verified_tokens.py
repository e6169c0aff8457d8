"""``python -m bench.verified_tokens``: a token's signature in ValidateToken, first and again.

The token service's validator (:class:`services.token.validation.AccessTokenValidator`) with a
real ES256 key ring, in this process: the CPU per call of :meth:`verified_claims` (the parse, the
signature and the claims; revocation and scopes are the same Redis round trip and comparisons
either way, so they are left out) on tokens it has never seen, then on tokens it saw just
before, with the verified-token cache off (``OTESSE_TOKEN_VERIFIED_CACHE_SIZE=0``) and at its
default size, in alternating rounds.

    .venv-bench/bin/python -m bench.verified_tokens            # 20000 tokens, 3 rounds
"""

from __future__ import annotations

import argparse
import base64
import statistics
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NoReturn

import uvloop
from cryptography.hazmat.primitives.asymmetric import ec

from services.common.audit import NOWHERE, Actor, Origin
from services.common.settings import Env
from services.token.access_tokens import AccessClaims, sign
from services.token.keys import KeyRing
from services.token.keys.jwk import public_jwk
from services.token.keys.sealing import seal_private_key
from services.token.keys.store import StoredKey
from services.token.settings import TokenSettings
from services.token.validation import AccessTokenValidator

DEFAULT_SIZE = TokenSettings.from_env(Env({})).verified_cache_size
KEK = bytes(range(32))


class _OneKey:
    """A key store holding one current key, in memory (the ring reads only ``published``)."""

    def __init__(self) -> None:
        private_key = ec.generate_private_key(ec.SECP256R1())
        jwk = public_jwk(private_key.public_key())
        self._key = StoredKey(kid=jwk["kid"], state="current", public_jwk=jwk,
                              sealed_private_key=seal_private_key(private_key, kek=KEK,
                                                                  kid=jwk["kid"]),
                              created_at=datetime.now(UTC),
                              activated_at=datetime.now(UTC), retired_at=None,
                              expires_at=None)

    async def published(self) -> list[StoredKey]:
        return [self._key]

    async def all(self) -> list[StoredKey]:
        return [self._key]

    async def ensure(self, *, kek: bytes) -> None:
        return None

    async def rotate(self, *, kek: bytes, retire_after_seconds: int,
                     min_next_age_seconds: float, actor: Actor, origin: Origin = NOWHERE,
                     expected_current: str | None = None) -> NoReturn:
        raise NotImplementedError("the benchmark never rotates")


@dataclass(frozen=True)
class Round:
    size: int
    first_us: float
    again_us: float


def _minted(ring: KeyRing, count: int) -> list[str]:
    now = int(time.time())
    return [sign(AccessClaims(iss="https://auth.otesse.com", sub=f"user-{n}",
                              aud="https://api.otesse.com", client_id="otesse_ci_bench",
                              scopes=("bookings:read", "customers:read"), iat=now,
                              exp=now + 3600, jti=base64.urlsafe_b64encode(
                                  uuid.uuid4().bytes).decode().rstrip("="),
                              grant_id=str(uuid.uuid4())), ring.current())
            for n in range(count)]


def _cpu_us_per_call(validator: AccessTokenValidator, tokens: list[str]) -> float:
    started = time.process_time()
    for token in tokens:
        validator.verified_claims(token)
    return (time.process_time() - started) / len(tokens) * 1e6


async def main(options: argparse.Namespace) -> list[Round]:
    ring = KeyRing(_OneKey(), kek=KEK)
    await ring.refresh()
    sizes = (0, options.size)
    rounds = []
    for _ in range(options.rounds):
        for size in sizes:
            validator = AccessTokenValidator(ring, None,  # type: ignore[arg-type]
                                             issuer="https://auth.otesse.com",
                                             audience="https://api.otesse.com",
                                             remembered=size)
            tokens = _minted(ring, options.tokens)
            first = _cpu_us_per_call(validator, tokens)
            # The newest tokens again, as many calls as the first pass made.
            recent = tokens[-min(len(tokens), max(size, 1)):]
            again = _cpu_us_per_call(validator, (recent * (len(tokens) // len(recent) + 1))
                                     [:len(tokens)])
            rounds.append(Round(size, first, again))
    print(f"ValidateToken's signature step, {options.tokens} tokens per round, medians of "
          f"{options.rounds} alternating rounds; CPU µs per call:")
    print(f"  {'cache size':>10} {'first sight':>12} {'again':>8}")
    for size in sizes:
        mine = [r for r in rounds if r.size == size]
        print(f"  {size:>10} {statistics.median(r.first_us for r in mine):>12.1f} "
              f"{statistics.median(r.again_us for r in mine):>8.1f}")
    return rounds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.verified_tokens",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=20000, metavar="N")
    parser.add_argument("--rounds", type=int, default=3, metavar="R")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, metavar="ENTRIES",
                        help=f"the cache size measured against none (default {DEFAULT_SIZE})")
    options = parser.parse_args(argv)
    if min(options.tokens, options.rounds, options.size) < 1:
        parser.error("--tokens, --rounds and --size must be at least 1")
    return options


if __name__ == "__main__":
    uvloop.run(main(parse_args()))

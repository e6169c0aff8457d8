"""Requests in flight per client address, capped (DESIGN §9: "per-IP concurrency limits bound
what one client can hold").

Behind a load balancer every client arrives over the balancer's connections, so a cap on
connections per peer cannot tell clients apart: this one counts requests by the client address
resolved through the trusted proxies (:mod:`services.gateway.forwarded`). A request over the cap
is answered ``429`` at once, before its body is read or an upstream is asked. The count is kept
in-process: each replica bounds what one client holds there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from services.gateway.errors import TooManyInFlight
from services.gateway.metrics import RATE_LIMITED


class InFlight:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._counts: dict[str, int] = {}

    @contextmanager
    def hold(self, address: str) -> Iterator[None]:
        """Counts one request of ``address`` while the block runs; raises 429 over the cap."""
        held = self._counts.get(address, 0)
        if held >= self._limit:
            RATE_LIMITED.labels("requests_in_flight_ip").inc()
            raise TooManyInFlight()
        self._counts[address] = held + 1
        try:
            yield
        finally:
            left = self._counts[address] - 1
            if left:
                self._counts[address] = left
            else:
                del self._counts[address]

    def __len__(self) -> int:
        """How many addresses have requests in flight."""
        return len(self._counts)

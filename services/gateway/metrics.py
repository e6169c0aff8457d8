"""Prometheus metrics of the gateway (on its admin port's ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter

RATE_LIMITED = Counter(
    "otesse_gateway_rate_limited_total",
    "Requests answered 429, by the limit that was reached.",
    ["limit"],
)
RATE_LIMIT_FAIL_OPEN = Counter(
    "otesse_gateway_rate_limit_fail_open_total",
    "Requests let through without a rate-limit check because Redis was slow or down.",
)
UPSTREAM_ERRORS = Counter(
    "otesse_gateway_upstream_errors_total",
    "Requests the upstream did not answer, by upstream and what went wrong.",
    ["upstream", "kind"],
)

"""Prometheus metrics of the token service (``GET /metrics``), beside the shared request ones:
what operators watch for abuse (reuse, replays) and for the deny-list's health."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

TOKENS_ISSUED = Counter(
    "otesse_token_issued_total",
    "Token responses issued, by grant type.",
    ["grant_type"],
)
REFRESH_RETRIES = Counter(
    "otesse_token_refresh_retries_total",
    "Rotated refresh tokens presented again inside the retry window (the same pair returned).",
)
GRANTS_REVOKED = Counter(
    "otesse_token_grants_revoked_total",
    "Grants revoked, by cause: code_replay, refresh_reuse, revocation, revoke_grant.",
    ["cause"],
)
VALIDATIONS = Counter(
    "otesse_token_validations_total",
    "Access-token validations (gRPC and introspection), by reason.",
    ["reason"],
)
DENYLIST_REBUILDS = Counter(
    "otesse_token_denylist_rebuilds_total",
    "Deny-list rebuilds from Postgres after Redis lost it.",
)
DENYLIST_FALLBACKS = Counter(
    "otesse_token_denylist_fallbacks_total",
    "Revocation checks answered by Postgres because Redis could not answer or may be behind.",
)
RATE_LIMITED = Counter(
    "otesse_token_rate_limited_total",
    "Token requests answered 429, by the limit that was reached.",
    ["limit"],
)
RATE_LIMIT_FAIL_OPEN = Counter(
    "otesse_token_rate_limit_fail_open_total",
    "Token requests let through without a rate-limit check because Redis was slow or down.",
)
FEED_SUBSCRIBERS = Gauge(
    "otesse_token_feed_subscribers",
    "WatchRevocations subscribers connected to this replica.",
)
FEED_CUT = Counter(
    "otesse_token_feed_cut_total",
    "WatchRevocations subscriptions ended by this replica, by cause: slow (fell too far "
    "behind), stopping (the replica stops); each subscriber resumes from its cursor.",
    ["cause"],
)

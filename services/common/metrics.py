"""Prometheus metrics shared by every service (``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Histogram(
    "otesse_http_request_duration_seconds",
    "HTTP requests served, by route and status.",
    ["service", "method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
GRPC_REQUESTS = Histogram(
    "otesse_grpc_request_duration_seconds",
    "gRPC calls served, by method and status code.",
    ["service", "method", "code"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
CONNECTIONS_REFUSED = Counter(
    "otesse_http_connections_refused_total",
    "Connections refused before a request reached the app, by limit: connections, "
    "connections_per_ip, header_timeout, header_bytes.",
    ["limit"],
)
DEPENDENCY_ERRORS = Counter(
    "otesse_dependency_unavailable_total",
    "Requests answered 503 / UNAVAILABLE because a store or peer was down.",
    ["service"],
)

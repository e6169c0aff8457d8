"""Opening gRPC channels to peer services: one long-lived channel per peer per process.

Every call carries the request id; calls that fail with ``UNAVAILABLE`` (peer restarting, a
rolling deploy) are retried a few times with backoff by gRPC itself, so callers only see the
error when the peer is really down.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc import aio

from services.common.request_id import ClientRequestIdInterceptor
from services.common.settings import GrpcTlsSettings


def _service_config(services: tuple[str, ...]) -> str:
    return json.dumps({
        "methodConfig": [{
            "name": [{"service": name} for name in services],
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "0.05s",
                "maxBackoff": "0.5s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }],
    })


def create_channel(
    target: str, *, services: tuple[str, ...], tls: GrpcTlsSettings | None = None,
    interceptors: Sequence[aio.ClientInterceptor] = (),
) -> aio.Channel:
    """A channel to ``target`` (host:port) for the named gRPC services."""
    options = [
        ("grpc.service_config", _service_config(services)),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.max_receive_message_length", 4 * 1024 * 1024),
        # Reconnect quickly after a peer restarts rather than waiting up to two minutes.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]
    chain: list[aio.ClientInterceptor] = [ClientRequestIdInterceptor(), *interceptors]
    if tls is not None and (tls.enabled or tls.ca_file):
        ca = Path(tls.ca_file).read_bytes() if tls.ca_file else None
        key = Path(tls.key_file).read_bytes() if tls.key_file else None
        cert = Path(tls.cert_file).read_bytes() if tls.cert_file else None
        credentials = grpc.ssl_channel_credentials(ca, key, cert)
        return aio.secure_channel(target, credentials, options=options,
                                  interceptors=chain)
    return aio.insecure_channel(target, options=options, interceptors=chain)

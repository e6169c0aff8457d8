"""Opening gRPC channels to peer services: one long-lived channel per peer per process.

Calls are balanced per call, not per connection: every channel uses client-side round robin over
all the addresses its target resolves to, so a target that names several replicas — the DNS
name of a Kubernetes headless Service (``dns:///token-grpc.otesse-auth.svc.cluster.local:50052``)
or a list (``ipv4:10.0.0.7:50052,10.0.0.8:50052``) — spreads calls over all of them; a plain
``host:port`` behind one address works as before. Nothing turns it on but the address.

Each replica's standard health service is watched (client-side health checking, gRFC A17): a
replica that reports ``NOT_SERVING`` — one draining after SIGTERM — gets no new calls while it
finishes the ones it has, so its stop fails none (calls that reach a gRPC server as it stops
are cancelled, not retried). Hence the target must name every replica: behind a single virtual
IP (a plain Kubernetes Service) the one connection's replica draining leaves no healthy
address, and calls fail with ``UNAVAILABLE`` until it stops. The servers close connections
every ``MAX_CONNECTION_AGE_SECONDS`` (``grpc.max_connection_age_ms``), which makes the channel
resolve the name again and find new pods.

Every call carries the request id; calls that fail with ``UNAVAILABLE`` (a replica killed
mid-call, all replicas restarting) are retried a few times with backoff by gRPC itself, on
another replica when there is one, so callers only see the error when the service is down.
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
        # Per call over every resolved address, rather than the default pick_first, which pins
        # the whole process to one replica for the life of the connection.
        "loadBalancingConfig": [{"round_robin": {}}],
        # Only replicas whose whole-server health ("") is SERVING receive calls.
        "healthCheckConfig": {"serviceName": ""},
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
    """A channel to ``target`` (``host:port``, ``dns:///name:port`` or ``ipv4:a:p,b:p``) for
    the named gRPC services, balanced per call over the addresses it resolves to."""
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

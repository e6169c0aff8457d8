"""HTTP header fields between the gateway and the services behind it, never seen by clients.

Every field named ``x-otesse-…`` is internal: the gateway strips them all from client requests
(a client must not speak for a service) and from upstream responses (a client must not read
what the services tell the gateway). Today there is one:

* ``x-otesse-client-auth: failed`` on a token-service answer whose client authentication failed
  (RFC 6749 §5.2 ``invalid_client``). The gateway charges it to the caller's address, so an
  address that keeps failing is refused before its requests reach the token service.
"""

from __future__ import annotations

PREFIX = b"x-otesse-"
CLIENT_AUTH = "x-otesse-client-auth"
CLIENT_AUTH_FAILED = "failed"


def is_internal(name: bytes) -> bool:
    """Whether a lower-case header name is an internal one."""
    return name.startswith(PREFIX)

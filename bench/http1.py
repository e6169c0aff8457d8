"""The load generator's HTTP/1.1 client: the gateway's own upstream pool, with a small API.

The load generator runs on the same cores as the servers, so every millisecond of CPU it
spends per request is a millisecond the servers do not get. A general client (httpx) costs
about 0.8–1 ms of CPU per request here; the gateway's upstream client
(:mod:`services.gateway.upstream_client`, a pooled asyncio protocol around the ``httptools``
parser uvicorn uses) costs a fraction of that, so the numbers measure the servers rather than
the client. This wraps it with just what the benchmark needs: whole answers, no redirects, no
cookies (the caller sends the ``Cookie`` header it wants). Signing in, which needs forms and
cookies, uses httpx.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from services.gateway.upstream_client import UpstreamPool

# uvicorn closes a keep-alive connection idle for 5 s; one idle this long is not reused, so a
# request never races the server's close.
MAX_IDLE_SECONDS = 2.0
TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Response:
    method: str
    path: str
    status: int
    # Lower-case names; a repeated header keeps its last value.
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """Up to ``connections`` requests at once to one ``http://host:port``; more wait for a
    connection to come free (up to ``TIMEOUT_SECONDS``)."""

    def __init__(self, base_url: str, *, connections: int,
                 headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"an http://host:port URL is needed, not {base_url!r}")
        self._pool = UpstreamPool(base_url, max_connections=connections,
                                  connect_timeout=TIMEOUT_SECONDS, read_timeout=TIMEOUT_SECONDS,
                                  keepalive_expiry=MAX_IDLE_SECONDS)
        fixed = {"Host": f"{parts.hostname}:{parts.port}", **(headers or {})}
        self._fixed = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                       for k, v in fixed.items()]

    async def request(self, method: str, path: str, *, params: dict[str, str] | None = None,
                      headers: dict[str, str] | None = None, body: bytes = b"") -> Response:
        target = f"{path}?{urlencode(params)}" if params else path
        fields = self._fixed + [(k.lower().encode("latin-1"), v.encode("latin-1"))
                                for k, v in (headers or {}).items()]
        async with asyncio.timeout(TIMEOUT_SECONDS):
            response = await self._pool.request(method, target.encode("latin-1"), fields, body)
            try:
                chunks = []
                more = True
                while more:
                    chunk, more = await response.read()
                    chunks.append(chunk)
            finally:
                response.close()
        answer_headers = {name.decode("latin-1"): value.decode("latin-1")
                          for name, value in response.headers}
        return Response(method, path, response.status, answer_headers, b"".join(chunks))

    async def get(self, path: str, *, params: dict[str, str] | None = None,
                  headers: dict[str, str] | None = None) -> Response:
        return await self.request("GET", path, params=params, headers=headers)

    async def post_json(self, path: str, payload: dict[str, str]) -> Response:
        return await self.request("POST", path, body=json.dumps(payload).encode(),
                                  headers={"Content-Type": "application/json"})

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

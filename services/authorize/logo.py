"""An app's logo for the consent screen, served from the registry's copy.

Served with the content type the registry detected from the bytes (never one a user
declared), ``nosniff`` so no browser second-guesses it, and the SHA-256 as a strong ETag.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from services.authorize.components import components

_CONTENT_TYPES = frozenset({"image/png", "image/jpeg", "image/webp"})


async def app_logo(request: Request) -> Response:
    c = components(request)
    client = await c.clients.get_with_logo(client_id=request.path_params["client_id"])
    if client is None or not client.HasField("logo") or \
            client.logo.content_type not in _CONTENT_TYPES:
        raise HTTPException(404)
    etag = f'"{client.logo_sha256}"'
    headers = {"ETag": etag, "Cache-Control": "public, max-age=3600",
               "X-Content-Type-Options": "nosniff",
               "Content-Security-Policy": "default-src 'none'; sandbox"}
    if etag in {tag.strip() for tag in request.headers.get("if-none-match", "").split(",")}:
        return Response(status_code=304, headers=headers)
    return Response(client.logo.data, media_type=client.logo.content_type, headers=headers)

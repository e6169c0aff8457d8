"""Headers every response of the authorize service carries (RFC 7034 ``X-Frame-Options``;
CSP Level 3 ``frame-ancestors``; Fetch ``nosniff``; Referrer Policy). HSTS is the gateway's,
which alone knows whether the browser's connection is HTTPS.

Pages are never framed (clickjacking the Approve button), never leak their URL — which may
hold a ``state`` or a ``code`` — in a ``Referer``, run no script at all, and are not cached.
A page whose form can end at another origin (consent, login in an OAuth flow) sets its own
CSP with that origin in ``form-action``; everything else gets the default one here.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def content_security_policy(form_targets: Sequence[str] = ()) -> str:
    # Browsers apply form-action to the redirects that follow a form submission too, so the
    # origin the browser is finally sent to (the client's redirect URI) must be listed.
    form_action = " ".join(["'self'", *form_targets])
    return ("default-src 'none'; style-src 'self'; img-src 'self' data:; "
            f"form-action {form_action}; frame-ancestors 'none'; base-uri 'none'")


DEFAULT_CSP = content_security_policy()
_STATIC_CACHE = b"public, max-age=86400"


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.defaults: list[tuple[bytes, bytes]] = [
            (b"content-security-policy", DEFAULT_CSP.encode()),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-content-type-options", b"nosniff"),
            (b"cross-origin-opener-policy", b"same-origin"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in self.defaults
                            if name not in present]
                if b"cache-control" not in present:
                    headers.append((b"cache-control", _STATIC_CACHE if static else b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_wrapper)

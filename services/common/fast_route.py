"""One hot route served without Starlette's router and its two exception layers.

A profile of the token service under refresh load (py-spy, bench/README.md) put a tenth of its
CPU between uvicorn and the endpoint: Starlette's outer error middleware, the exception
middleware and its per-request handler wrapper, route matching over every route, and the
request/response adapter. ``POST /oauth/token`` is almost all of the service's traffic, so it is
dispatched first, by exact path and method, straight to its endpoint: inside the app's own
middleware (request id, metric, access line, security headers: each added with
``add_middleware``), with the app's own exception handlers, looked up the way Starlette looks
them up (the exception's classes in order). Every other request, and this path with another
method (405), goes through the app as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Exception], Awaitable[Response]]


class FastRoute:
    """ASGI: ``method path`` to ``endpoint`` directly, anything else to ``app``."""

    def __init__(self, app: ASGIApp, *, starlette: Starlette, route: Route, method: str,
                 endpoint: Endpoint, handlers: Mapping[Any, Handler],
                 middleware: Sequence[Middleware]) -> None:
        self._app = app
        self._starlette = starlette
        self._route = route
        self._path = route.path
        self._method = method
        self._endpoint = endpoint
        self._handlers = dict(handlers)
        # The app's own middleware around this route too, in the same order (the first added
        # is the innermost), as Starlette builds it.
        served: ASGIApp = self._serve
        for cls, args, kwargs in reversed(middleware):
            served = cls(served, *args, **kwargs)
        self._served = served

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["path"] == self._path
                and scope["method"] == self._method):
            await self._served(scope, receive, send)
        else:
            await self._app(scope, receive, send)

    def _handler(self, exc: Exception) -> tuple[type, Handler] | None:
        for cls in type(exc).__mro__:
            if cls in self._handlers:
                return cls, self._handlers[cls]
        return None

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        # What Starlette and its router would have put in the scope: the app (request.app),
        # the router (url_for), the matched route (the metric's label) and its endpoint.
        scope["app"] = self._starlette
        scope.setdefault("router", self._starlette.router)
        scope["route"] = self._route
        scope["endpoint"] = self._endpoint
        scope["path_params"] = {}
        request = Request(scope, receive)
        try:
            response = await self._endpoint(request)
        except Exception as exc:
            found = self._handler(exc)
            if found is None:
                raise
            cls, handler = found
            response = await handler(request, exc)
            if cls is Exception:
                # Starlette answers an exception only its catch-all handler knows, then
                # re-raises it so that the server logs it: the same here.
                await response(scope, receive, send)
                raise
        await response(scope, receive, send)


class FastRouteStarlette(Starlette):
    """A Starlette app whose one hot route (``fast``) skips its middleware stack but for the
    request context (see :class:`FastRoute`)."""

    def __init__(self, *args: Any, fast: tuple[str, Route], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fast = fast

    def build_middleware_stack(self) -> ASGIApp:
        method, route = self._fast
        return FastRoute(super().build_middleware_stack(), starlette=self, route=route,
                         method=method, endpoint=route.endpoint,
                         handlers=self.exception_handlers, middleware=self.user_middleware)

"""The ``/wx`` proxy's calls without a body, answered in front of Litestar.

A proxied call is the gateway's costliest request, and Litestar's pipeline (routing, the request object,
the handler's signature and dependencies, the exception middleware) was about a sixth of it
(docs/benchmarks.md). So this ASGI wrapper hands a ``GET /wx/<api>`` without a body to `WxProxy.call`
itself, with the headers and query the route would give it, and answers with the very response object
the route builds (``wx.answer``); a refusal goes through the route's exception handlers, as the route's
would. Anything else goes to the app untouched: another method, a body, the token and component routes,
a path the route would refuse or normalise, an unusual Host. The controller stays the one documented in
the OpenAPI schema.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from litestar import Request
from litestar.datastructures import Headers
from litestar.enums import ScopeType
from litestar.types import ASGIApp, ExceptionHandlersMap, HTTPScope, Receive, Scope, Send

from gateway.http.up_front import PLAIN_HOST, answer_error, query_pairs
from gateway.http.wx import FORWARD_TEMPLATE, answer, is_api_path
from gateway.proxy.policy import WxProxy

__all__ = ["answer_wx_calls_up_front"]

_PREFIX = "/wx/"
# Paths of the other /wx routes, which the wrapper leaves to them.
_OTHER_ROUTES = ("cgi-bin/token", "cgi-bin/stable_token", "component/")
_BODY_HEADERS = frozenset({b"content-length", b"transfer-encoding"})


def answer_wx_calls_up_front(app: ASGIApp, proxy: WxProxy, handlers: ExceptionHandlersMap) -> ASGIApp:
    """``app`` (the Litestar app's ASGI handler), with ``GET /wx/<api>`` calls without a body forwarded
    before it; ``handlers`` are the route's exception handlers, which word every refusal."""

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        # A str-valued enum: the server's plain "http" compares equal (`is` would not).
        api = _call_path(scope) if scope["type"] == ScopeType.HTTP else None
        if api is None:
            await app(scope, receive, send)
            return
        scope["path_template"] = FORWARD_TEMPLATE
        try:
            reply = await proxy.call(
                "GET", api, query_pairs(scope["query_string"]), Headers.from_scope(scope), _no_body()
            )
        except Exception as exc:  # worded as the route would: WeChat's shape, or 500 and logged
            await answer_error(scope, receive, send, handlers, exc)
            return
        request: Request[Any, Any, Any] = Request(scope, receive)
        await answer(reply).to_asgi_response(app=None, request=request)(scope, receive, send)

    return handle


def _call_path(scope: HTTPScope) -> str | None:
    """The API path of a call the wrapper may forward (as the route's ``api`` parameter), else None."""
    path: str = scope["path"]
    if scope["method"] != "GET" or not path.startswith(_PREFIX) or scope.get("root_path"):
        return None
    api = path[len(_PREFIX) :]
    # Only paths the route takes as they are (the route's own check), of no other /wx route.
    if not is_api_path(api) or api.startswith(_OTHER_ROUTES) or api == "component":
        return None
    for name, value in scope["headers"]:
        if name in _BODY_HEADERS or (name == b"host" and not PLAIN_HOST.fullmatch(value)):
            return None
    return api


async def _no_body() -> AsyncIterator[bytes]:
    """The body of a request without one, as the route's ``request.stream()`` gives it: no chunk."""
    nothing: tuple[bytes, ...] = ()
    for chunk in nothing:
        yield chunk

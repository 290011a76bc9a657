"""The token routes' answers from memory, in front of Litestar.

``GET /v1/authorizers/{appid}/access-token`` (and ``/jsapi-ticket``) is the gateway's busiest route, and
once the client, the authorizer's grants and the token are in memory, Litestar's request pipeline
(routing, the request object, dependency injection, response building) costs more than everything the
route itself does (docs/benchmarks.md). So this ASGI wrapper answers such a request itself, with the same
checks, rate limit, audit record and bytes as the route, and hands every other request to the app
untouched: one that any check refuses, whose grants or token would have to be read or renewed, with a
body, reporting a stale token (``?stale=``: compared with the store, perhaps renewed), or of any other
shape. Refusals are therefore always worded by the route (`gateway.http.errors`),
and the controller stays the one documented in the OpenAPI schema.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec
from litestar.enums import ScopeType
from litestar.types import (
    ASGIApp,
    ExceptionHandlersMap,
    HTTPResponseStartEvent,
    HTTPScope,
    Receive,
    Scope,
    Send,
)

from gateway.access.service import ACCESS_TOKEN, JSAPI_TICKET, TokenVending, Vended
from gateway.credentials.tokens import Token
from gateway.http.up_front import PLAIN_HOST, answer_error, query_pairs
from gateway.registry.model import Client

__all__ = ["answer_tokens_from_memory"]

_PREFIX = "/v1/authorizers/"
_ROUTES: dict[str, tuple[Vended[Any], str]] = {
    # the last path segment -> what is vended, and the route's template (the metrics' label)
    "access-token": (ACCESS_TOKEN, "/v1/authorizers/{appid}/access-token"),
    "jsapi-ticket": (JSAPI_TICKET, "/v1/authorizers/{appid}/jsapi-ticket"),
}
# Headers after which only the app may answer: a body (the app caps and refuses it), and a Host outside a
# plain subset of what Litestar accepts (Litestar refuses malformed ones).
_BODY_HEADERS = frozenset({b"content-length", b"transfer-encoding"})
_HEADERS = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
_encode = msgspec.json.Encoder().encode


class _Found(NamedTuple):
    appid: str
    what: Vended[Any]
    template: str
    client: Client
    token: Token


def answer_tokens_from_memory(app: ASGIApp, vending: TokenVending, handlers: ExceptionHandlersMap) -> ASGIApp:
    """``app`` (the Litestar app's ASGI handler), with the token routes answered from memory when they
    can be; ``handlers`` are the route's exception handlers, for a refusal of the rate limit."""

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        # A str-valued enum: the server's plain "http" compares equal (`is` would not).
        found = _from_memory(scope, vending) if scope["type"] == ScopeType.HTTP else None
        if found is None:
            await app(scope, receive, send)
            return
        scope["path_template"] = found.template
        scope["user"] = found.client  # as the route's guard would: the access log names the client
        try:
            issued = await vending.hand_over(found.client, found.appid, found.what, found.token)
        except Exception as exc:  # answered as the app would: 429 with Retry-After, or 500 and logged
            await answer_error(scope, receive, send, handlers, exc)
            return
        body = _encode(issued)
        start: HTTPResponseStartEvent = {
            "type": "http.response.start",
            "status": 200,
            "headers": [*_HEADERS, (b"content-length", b"%d" % len(body))],
        }
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return handle


def _from_memory(scope: HTTPScope, vending: TokenVending) -> _Found | None:
    """What to answer, when this request is one the wrapper may answer and the answer is in memory."""
    path: str = scope["path"]
    if scope["method"] != "GET" or not path.startswith(_PREFIX) or scope.get("root_path"):
        return None
    appid, _, last = path[len(_PREFIX) :].partition("/")
    route = _ROUTES.get(last)
    if route is None:
        return None
    query: bytes = scope["query_string"]
    if query and any(name == "stale" for name, _ in query_pairs(query)):
        return None  # the stored value decides, not memory: the route reads and renews
    authorization = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            if authorization is None:
                authorization = value.decode("latin-1")
        elif name in _BODY_HEADERS or (name == b"host" and not PLAIN_HOST.fullmatch(value)):
            return None
    what, template = route
    found = vending.from_memory(authorization, appid, what)
    return None if found is None else _Found(appid, what, template, *found)

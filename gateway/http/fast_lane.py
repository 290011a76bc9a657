"""One fast lane through Litestar's router, past its request pipeline, for the three busiest routes.

An app fetches a token, every call goes through the proxy, and WeChat pushes a ticket to every platform
every ten minutes. On these routes Litestar's pipeline (the request object, signature parsing,
dependency resolution, response building) cost more than the route's own work (docs/benchmarks.md), and a
lean controller did not win it back. So Litestar's own router picks the route (`handle_routing`), and when
the route is one of `FAST_ROUTES` the lane runs the route's guards (Litestar resolves them), awaits the
very service call the controller awaits, and answers with the controller's bytes; a refusal is rendered
by the exception handlers Litestar resolves for that route. A request of a shape the lane does not take
(a body where none is expected, a query parameter Litestar validates, an unusual Host) goes on to the app
untouched, and so does every other route. The controllers stay the ones documented in the OpenAPI schema;
`tests/test_fast_lane.py` holds each fast route to its controller.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from litestar import Litestar, Request, Response
from litestar.datastructures import Headers
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.types import ASGIApp, Receive, Scope, Send
from litestar.utils import normalize_path

from gateway.access.service import TokenVending
from gateway.callbacks.intake import MAX_PUSH_BYTES, EventIntake
from gateway.http.wx import answer, is_api_path
from gateway.proxy.policy import WxProxy
from gateway.registry.model import Client

__all__ = ["FAST_ROUTES", "FastRoute", "Raw", "fast_lane", "fast_routes"]


@dataclass(frozen=True, slots=True)
class Raw:
    """The request as the lane reads it, once: Litestar's routing result and the raw scope."""

    scope: Scope
    receive: Receive
    path_params: dict[str, Any]

    def query(self) -> list[tuple[str, str]]:
        return query_pairs(self.scope["query_string"])

    def request(self) -> Request[Any, Any, Any]:
        return Request(self.scope, self.receive)


Answer = Callable[[Raw], Awaitable[ASGIApp]]


@dataclass(frozen=True, slots=True)
class FastRoute:
    """A route the lane answers: Litestar's method and path template of its controller, which requests
    the lane takes (the others go to the controller), and the answer: the controller's service call."""

    method: str
    template: str
    takes: Callable[[Raw], bool]
    answer: Answer


# The templates as Litestar's router reports them (`path_template`): the metrics' route label too.
FAST_ROUTES = (
    ("GET", "/v1/authorizers/{appid}/access-token"),
    ("GET", "/v1/authorizers/{appid}/jsapi-ticket"),
    ("GET", "/wx/{api}"),
    ("POST", "/wechat/{platform}/events"),
    ("POST", "/wechat/events"),
)

# A plain subset of the Host headers Litestar accepts; a request with any other Host is left to
# Litestar, which refuses malformed ones.
_PLAIN_HOST = re.compile(rb"[0-9A-Za-z.\-:\[\]]*")
_BODY_HEADERS = frozenset({b"content-length", b"transfer-encoding"})
_LENGTH = re.compile(rb"[0-9]{1,9}")
_JSON_HEADERS = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
_SUCCESS = b"success"
_TEXT_HEADERS = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(_SUCCESS))]
_encode = msgspec.json.Encoder().encode


def fast_routes(vending: TokenVending, intake: EventIntake, proxy: WxProxy) -> list[FastRoute]:
    """The lane's table: each entry awaits what its controller awaits (`gateway.http.v1`,
    `gateway.http.wx`, `gateway.http.wechat`)."""

    def vend(issue: Callable[[Client, str], Awaitable[Any]]) -> Answer:
        async def answer_token(raw: Raw) -> ASGIApp:
            # The guards (run by the lane) made the client the request's user, as for the controller.
            return _json(await issue(raw.scope["user"], raw.path_params["appid"]))

        return answer_token

    async def forward(raw: Raw) -> ASGIApp:
        api = raw.path_params["api"].lstrip("/")
        reply = await proxy.call("GET", api, raw.query(), Headers.from_scope(raw.scope), _no_body())
        return answer(reply).to_asgi_response(app=None, request=raw.request())

    def receive(platform: Callable[[Raw], str | None]) -> Answer:
        async def receive_push(raw: Raw) -> ASGIApp:
            body = await _read_body(raw.receive)
            if body is None:  # the client went away: nothing to receive, nobody to answer
                return _nothing
            await intake.receive(platform(raw), _first_values(raw.query()), body)
            return _success

        return receive_push

    tokens, wx, pushes = FAST_ROUTES[:2], FAST_ROUTES[2], FAST_ROUTES[3:]
    return [
        FastRoute(*tokens[0], _takes_token_request, vend(vending.access_token)),
        FastRoute(*tokens[1], _takes_token_request, vend(vending.jsapi_ticket)),
        FastRoute(*wx, _takes_call, forward),
        FastRoute(*pushes[0], _takes_push, receive(lambda raw: raw.path_params["platform"])),
        FastRoute(*pushes[1], _takes_push, receive(lambda raw: None)),
    ]


def fast_lane(app: Litestar, routes: list[FastRoute]) -> ASGIApp:
    """``app``'s ASGI handler, with ``routes`` answered in the lane."""
    inner = app.asgi_handler
    router = app.asgi_router
    table: Mapping[tuple[str, str], FastRoute] = {(r.method, r.template): r for r in routes}
    methods = frozenset(r.method for r in routes)

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        # A str-valued enum: the server's plain "http" compares equal.
        if scope["type"] != ScopeType.HTTP or scope["method"] not in methods or scope.get("root_path"):
            await inner(scope, receive, send)
            return
        try:
            _, handler, path, params, template = router.handle_routing(
                normalize_path(scope["path"]), scope["method"]
            )
        except HTTPException:  # no such route, or not this method: the app answers
            await inner(scope, receive, send)
            return
        route = table.get((scope["method"], template))
        raw = Raw(scope, receive, params)
        if route is None or not _plain_host(scope) or not route.takes(raw):
            await inner(scope, receive, send)
            return
        scope["path"], scope["path_params"], scope["path_template"] = path, params, template
        scope["route_handler"] = handler
        try:
            guards = handler.resolve_guards()  # the route's, its controller's and routers' (cached)
            if guards:
                request = raw.request()
                for guard in guards:
                    checked = guard(request, handler)
                    if checked is not None:
                        await checked
            respond = await route.answer(raw)
        except Exception as exc:  # worded by the route's own handlers, as Litestar would
            respond = _refusal(raw, handler.resolve_exception_handlers(), exc)
        await respond(scope, receive, send)

    return handle


def _takes_token_request(raw: Raw) -> bool:
    """Token requests without a body and without ``?stale=`` (Litestar validates it; a report of a stale
    token is rare)."""
    if any(name in _BODY_HEADERS for name, _ in raw.scope["headers"]):
        return False
    query: bytes = raw.scope["query_string"]
    return not query or all(name != "stale" for name, _ in query_pairs(query))


def _takes_call(raw: Raw) -> bool:
    """``GET /wx/<api>`` without a body, of a path the controller takes as it is."""
    api: str = raw.path_params["api"].lstrip("/")  # as the controller reads it
    return is_api_path(api) and not any(name in _BODY_HEADERS for name, _ in raw.scope["headers"])


def _takes_push(raw: Raw) -> bool:
    """A push whose one ``Content-Length`` is within the routes' cap (Litestar frames and refuses the
    others)."""
    length = None
    for name, value in raw.scope["headers"]:
        if name == b"content-length":
            if length is not None or not _LENGTH.fullmatch(value):
                return False
            length = int(value)
        elif name == b"transfer-encoding":
            return False
    return length is not None and length <= MAX_PUSH_BYTES


def _plain_host(scope: Scope) -> bool:
    return all(_PLAIN_HOST.fullmatch(value) for name, value in scope["headers"] if name == b"host")


def _refusal(raw: Raw, handlers: Mapping[Any, Any], exc: Exception) -> ASGIApp:
    """``exc`` answered by the handler Litestar resolved for the route (every router maps ``Exception``)."""
    handler = next(handlers[kind] for kind in type(exc).__mro__ if kind in handlers)
    request = raw.request()
    response: Response[Any] = handler(request, exc)
    return response.to_asgi_response(app=None, request=request)


def _json(answer: Any) -> ASGIApp:
    """The controller's 200 of a msgspec struct (Litestar encodes with msgspec too: the same bytes)."""
    body = _encode(answer)
    headers = [*_JSON_HEADERS, (b"content-length", b"%d" % len(body))]

    async def respond(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return respond


async def _success(scope: Scope, receive: Receive, send: Send) -> None:
    """The push routes' answer: ``success``, as WeChat expects it."""
    await send({"type": "http.response.start", "status": 200, "headers": _TEXT_HEADERS})
    await send({"type": "http.response.body", "body": _SUCCESS, "more_body": False})


def query_pairs(query_string: bytes) -> list[tuple[str, str]]:
    """The query's pairs in order, as Litestar reads them (parse_qsl of the latin-1 text, blank values
    kept)."""
    text = query_string.decode("latin-1")
    if "%" in text or "+" in text:
        return parse_qsl(text, keep_blank_values=True, separator="&")
    # Nothing to unquote, as in WeChat's queries and the proxy's (hex, digits, "aes", tokens): parse_qsl's
    # result at a quarter of its cost.
    return [(name, value) for name, _, value in (f.partition("=") for f in text.split("&") if f)]


def _first_values(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """The query as the push routes read it: of a name given twice, the first value."""
    query: dict[str, str] = {}
    for name, value in pairs:
        query.setdefault(name, value)
    return query


async def _read_body(receive: Receive) -> bytes | None:
    """The whole body, or None when the client disconnects first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _nothing(scope: Scope, receive: Receive, send: Send) -> None:
    """No answer (the client is gone)."""


async def _no_body() -> AsyncIterator[bytes]:
    """The body of a request without one, as the route's ``request.stream()`` gives it: no chunk."""
    nothing: tuple[bytes, ...] = ()
    for chunk in nothing:
        yield chunk

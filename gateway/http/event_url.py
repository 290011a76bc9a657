"""The authorization event URL, answered in front of Litestar.

A push costs the gateway its checks, decryption, a sealed ticket and a share of a group commit, and
Litestar's request pipeline (routing, the request object, dependency injection, response building) would
add about as much again (docs/benchmarks.md). So this ASGI wrapper hands the pushes of
``POST /wechat/{platform}/events`` and ``POST /wechat/events`` to `EventIntake` itself, answers
``success`` with the route's bytes, and answers a refusal through the routes' exception handlers, as the
route would. Any other request goes to the app untouched, and so does a push whose body is announced
without a length, over the limit, or with an unusual Host: Litestar frames and refuses those. The
controller stays the one documented in the OpenAPI schema.
"""

from __future__ import annotations

import re

from litestar.enums import ScopeType
from litestar.types import ASGIApp, ExceptionHandlersMap, HTTPScope, Receive, Scope, Send

from gateway.callbacks.intake import MAX_PUSH_BYTES, EventIntake
from gateway.http.up_front import PLAIN_HOST, answer_error, query_pairs

__all__ = ["answer_pushes_up_front"]

_PREFIX = "/wechat/"
_SUFFIX = "/events"
_SHARED = "/wechat/events"
# The routes' templates: the metrics' label.
_PER_PLATFORM = "/wechat/{platform}/events"
_LENGTH = re.compile(rb"[0-9]{1,9}")
_SUCCESS = b"success"
_HEADERS = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(_SUCCESS))]


def answer_pushes_up_front(app: ASGIApp, intake: EventIntake, handlers: ExceptionHandlersMap) -> ASGIApp:
    """``app`` (the Litestar app's ASGI handler), with pushes to the authorization event URL received
    before it; ``handlers`` are the routes' exception handlers, which word every refusal."""

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        # A str-valued enum: the server's plain "http" compares equal (`is` would not).
        target = _push_target(scope) if scope["type"] == ScopeType.HTTP else None
        if target is None:
            await app(scope, receive, send)
            return
        platform, template = target
        scope["path_template"] = template
        body = await _read_body(receive)
        if body is None:  # the client went away: nobody to answer
            return
        try:
            await intake.receive(platform, _query(scope["query_string"]), body)
        except Exception as exc:  # worded as the route would: 400 naming the fault, 500 logged
            await answer_error(scope, receive, send, handlers, exc)
            return
        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        await send({"type": "http.response.body", "body": _SUCCESS, "more_body": False})

    return handle


def _push_target(scope: HTTPScope) -> tuple[str | None, str] | None:
    """The platform named by the path (None for the shared URL) and the route's template, when this is a
    push the wrapper may receive."""
    path: str = scope["path"]
    if scope["method"] != "POST" or not path.startswith(_PREFIX) or scope.get("root_path"):
        return None
    if path == _SHARED:
        target: tuple[str | None, str] = (None, _SHARED)
    else:
        platform = path[len(_PREFIX) : -len(_SUFFIX)] if path.endswith(_SUFFIX) else ""
        if not platform or "/" in platform:
            return None
        target = (platform, _PER_PLATFORM)
    length = None
    for name, value in scope["headers"]:
        if name == b"content-length":
            if length is not None or not _LENGTH.fullmatch(value):
                return None
            length = int(value)
        elif name == b"transfer-encoding" or (name == b"host" and not PLAIN_HOST.fullmatch(value)):
            return None
    return target if length is not None and length <= MAX_PUSH_BYTES else None


def _query(query_string: bytes) -> dict[str, str]:
    """The query as the route reads it (Litestar's parsing, and of a name given twice the first value)."""
    query: dict[str, str] = {}
    for name, value in query_pairs(query_string):
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

"""What the routes answered in front of Litestar share (`tokens_from_memory`, `event_url`, `wx_front`):
which Host headers they may take, how they read a query, and how they answer an error."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from litestar import Request, Response
from litestar.types import ExceptionHandlersMap, Receive, Scope, Send

__all__ = ["PLAIN_HOST", "answer_error", "query_pairs"]

# A plain subset of what Litestar accepts; a request with any other Host is left to Litestar, which
# refuses malformed ones.
PLAIN_HOST = re.compile(rb"[0-9A-Za-z.\-:\[\]]*")


async def answer_error(
    scope: Scope, receive: Receive, send: Send, handlers: ExceptionHandlersMap, exc: Exception
) -> None:
    """``exc`` answered by the handler for it in ``handlers``, as Litestar's exception middleware would:
    the map of the route's router (`gateway.http.errors`), whole (it maps ``Exception``); no route sets
    ``after_exception`` hooks."""
    handler = next(handlers[kind] for kind in type(exc).__mro__ if kind in handlers)
    request: Request[Any, Any, Any] = Request(scope, receive)
    response: Response[Any] = handler(request, exc)
    await response.to_asgi_response(app=None, request=request)(scope, receive, send)


def query_pairs(query_string: bytes) -> list[tuple[str, str]]:
    """The query's pairs in order, as Litestar reads them (parse_qsl of the latin-1 text, blank values
    kept)."""
    text = query_string.decode("latin-1")
    if "%" in text or "+" in text:
        return parse_qsl(text, keep_blank_values=True, separator="&")
    # Nothing to unquote, as in WeChat's queries and the proxy's (hex, digits, "aes", tokens): parse_qsl's
    # result at a quarter of its cost.
    return [(name, value) for name, _, value in (f.partition("=") for f in text.split("&") if f)]

"""Every HTTP request: a request id bound to its log lines and echoed back, its route, status and
latency counted, and one access line logged (``gateway.access``).

It wraps the app's ASGI handler, outside Litestar's routing, so that requests matching no route (404,
405) are counted and carry a request id too: Litestar's own middleware runs only around matched handlers.
The route label is Litestar's path template (``/v1/authorizers/{appid}/access-token``), never the raw
path, so no appid or id becomes a label. The token route is benchmarked: this adds a few microseconds.

The access line names the client (the registry's id of the client a guard admitted, ``scope["user"]``,
or the ``/wx`` proxy identified, ``REQUEST_CLIENT``; else the peer's address), the route template, method,
status, duration and request id: never the raw path, query string or a header, where keys and tokens
travel. Every lane answers inside this wrapper, so every request can have its line; by default
(``GATEWAY_ACCESS_LOG=refusals``) only those answered 4xx or 5xx do, since a line costs the server about as
much CPU as a cached token request.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import Counter, Histogram

from gateway.observability.logs import REQUEST_CLIENT, REQUEST_ID
from gateway.observability.metrics import Metrics
from gateway.settings import AccessLog

__all__ = ["REQUEST_ID_HEADER", "observed"]

REQUEST_ID_HEADER = "X-Request-Id"
_HEADER = REQUEST_ID_HEADER.lower().encode()
# An incoming id is kept when it is short and plain (a load balancer's or a caller's trace id); anything
# else could forge log lines or blow up a log index, and is replaced.
_SANE_ID = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
# Generated ids: this process's random prefix and a counter, unique across replicas and restarts without
# a system call per request (an id names a request; it is no secret).
_ID_PREFIX = secrets.token_hex(4)
_next_id = itertools.count(1)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
access_logger = logging.getLogger("gateway.access")


def observed(app: ASGIApp, metrics: Metrics, *, access_log: AccessLog = "all") -> ASGIApp:
    """``app`` with request ids, HTTP metrics and access lines: of every request (``all``), of those
    answered 4xx or 5xx (``refusals``), or none (``off``)."""
    # The lowest status logged: 0 logs everything; past any status, nothing.
    lowest = {"all": 0, "refusals": 400, "off": 1000}[access_log]
    # The labelled children, looked up once per (route, method, status): ``labels()`` costs more than the
    # increments themselves. Bounded, since routes are the app's templates and methods a fixed set.
    children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        status = 500  # what the client sees if the app fails before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (_HEADER, request_id.encode())]
            await send(message)

        bound = REQUEST_ID.set(request_id)
        unknown = REQUEST_CLIENT.set(None)
        try:
            await app(scope, receive, send_with_id)
        finally:
            route = scope.get("path_template") or "unmatched"
            method = scope["method"] if scope["method"] in _METHODS else "other"
            seconds = time.perf_counter() - started
            if status >= lowest and access_logger.isEnabledFor(logging.INFO):
                _log_access(scope, route, method, status, seconds)
            REQUEST_CLIENT.reset(unknown)
            REQUEST_ID.reset(bound)
            key = (route, method, status)
            if key not in children:
                children[key] = (
                    metrics.http_requests.labels(route, method, str(status)),
                    metrics.http_latency.labels(route),
                )
            requests, latency = children[key]
            requests.inc()
            latency.observe(seconds)

    return handle


def _log_access(scope: Scope, route: str, method: str, status: int, seconds: float) -> None:
    user = scope.get("user")
    client = getattr(user, "id", None) or REQUEST_CLIENT.get()
    if client is None:
        peer = scope.get("client")
        client = peer[0] if peer else "-"
    fields = {
        "client": client,
        "route": route,
        "method": method,
        "status": status,
        "duration_s": round(seconds, 6),
    }
    # The record made directly and handled: `Logger.info` would first walk the stack for the caller's file
    # and line, which no line of ours shows, and that walk was a third of the line's cost.
    record = access_logger.makeRecord(
        access_logger.name, logging.INFO, "", 0, "%s %s %d", (method, route, status), None, extra=fields
    )
    access_logger.handle(record)


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == _HEADER and _SANE_ID.fullmatch(value):
            return value.decode()
    return f"{_ID_PREFIX}{next(_next_id):08x}"

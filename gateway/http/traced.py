"""A span of every HTTP request, when tracing is on (`gateway.observability.tracing`; imported only then).

It wraps the app inside `gateway.http.observe`, so every lane's requests are traced and the span carries
the request id. The span is named by method and route template (``GET /v1/authorizers/{appid}/access-token``)
and holds no raw path, no query string and no header: keys and gateway tokens travel there. A caller's
``traceparent`` is continued.
"""

from __future__ import annotations

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from gateway import __version__
from gateway.observability.logs import REQUEST_ID

__all__ = ["traced"]


class _HeaderGetter(Getter[Scope]):
    """The propagator's view of the ASGI headers (only the trace context headers are asked for)."""

    def get(self, carrier: Scope, key: str) -> list[str] | None:
        wanted = key.lower().encode()
        found = [value.decode("latin-1") for name, value in carrier["headers"] if name == wanted]
        return found or None

    def keys(self, carrier: Scope) -> list[str]:
        return [name.decode("latin-1") for name, _ in carrier["headers"]]


_GETTER = _HeaderGetter()


def traced(app: ASGIApp, tracer: Tracer | None = None) -> ASGIApp:
    """``app`` with a server span per HTTP request, made by ``tracer`` (default: the process provider's)."""
    tracer = tracer or trace.get_tracer("gateway", __version__)

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        method = scope["method"]
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        context = propagate.extract(scope, getter=_GETTER)
        with tracer.start_as_current_span(
            method,
            context=context,
            kind=SpanKind.SERVER,
            record_exception=False,  # an exception's message and frames stay in the log, not the trace
            set_status_on_exception=False,
        ) as span:
            try:
                await app(scope, receive, send_status)
            except BaseException as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise
            finally:
                route = scope.get("path_template") or "unmatched"
                span.update_name(f"{method} {route}")
                span.set_attribute("http.request.method", method)
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                request_id = REQUEST_ID.get()
                if request_id is not None:
                    span.set_attribute("gateway.request_id", request_id)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))

    return handle

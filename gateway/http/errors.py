"""The two renderers of errors, registered on the routers that use them (``gateway.http.app``):

- the house shape, for ``/v1`` and every route without a router of its own: RFC 9457
  ``application/problem+json`` (``type``, ``title``, ``status``, ``detail``) that keeps the ``error``
  member (``{"code", "message"}``) clients read, with ``WWW-Authenticate: Bearer`` on a 401; WeChat's
  event and message URLs answer the same ``error`` member as plain JSON, as they always have;
- WeChat's shape, for ``/wx``: ``{"errcode", "errmsg"}``, so SDKs react as they do to WeChat.

What status a domain error (`gateway.errors.Refused`) is, and which errcode it is on ``/wx``, is decided
here, each in one table looked up by the error's class; nothing looks at a request's path or an error's
words to choose.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any, TypeVar, cast

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.plugins.problem_details import ProblemDetailsException
from litestar.types import ExceptionHandlersMap

from gateway.errors import (
    AuthorizationRevoked,
    AuthorizerUnknown,
    BindingRefused,
    DeliveryUnknown,
    Forbidden,
    InvalidCursor,
    InvalidInput,
    PermissionSetMissing,
    PlatformUnknown,
    PushRejected,
    PushSignatureInvalid,
    PushTooLarge,
    QuotaClearsUsedUp,
    QuotaExhausted,
    RateLimited,
    ReauthorizationRequired,
    Refused,
    RegistryRefused,
    TicketMissing,
    Unauthenticated,
    WeChatRefused,
    WeChatTimedOut,
    WeChatUnavailable,
    WxError,
)
from gateway.http.params import invalid_parameters
from gateway.store.database import STORE_UNAVAILABLE

__all__ = [
    "HOUSE_HANDLERS",
    "PROBLEM_JSON",
    "PUSH_HANDLERS",
    "STATUS",
    "WECHAT",
    "WECHAT_HANDLERS",
    "ErrorBody",
    "ErrorDetail",
    "Problem",
    "problem_type",
    "status_of",
    "wechat_errcode_of",
]

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

# The HTTP status of each refusal; a class not listed takes its nearest listed ancestor's.
STATUS: Mapping[type[Refused], int] = {
    Refused: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    InvalidInput: 422,
    InvalidCursor: 400,
    PlatformUnknown: 404,
    AuthorizerUnknown: 404,
    DeliveryUnknown: 404,
    ReauthorizationRequired: 409,
    PermissionSetMissing: 409,
    BindingRefused: 409,
    QuotaClearsUsedUp: 409,
    RegistryRefused: 409,
    AuthorizationRevoked: 410,
    RateLimited: 429,
    WeChatRefused: 502,
    TicketMissing: 503,
    QuotaExhausted: 503,
    WeChatUnavailable: 503,
    PushRejected: 400,
    PushSignatureInvalid: 403,
    PushTooLarge: 413,
}

# How a refusal of the services reads on /wx: WeChat's errcode for the same fault, and the HTTP status
# (WeChat answers its refusals with 200; -1 comes with the gateway's 5xx). Not listed: -1 with 502.
WECHAT: Mapping[type[Refused], tuple[int, int]] = {
    Unauthenticated: (40001, 200),
    Forbidden: (48001, 200),
    InvalidInput: (40013, 200),
    PlatformUnknown: (40013, 200),
    AuthorizerUnknown: (40013, 200),
    AuthorizationRevoked: (61003, 200),
    ReauthorizationRequired: (61023, 200),
    PermissionSetMissing: (48001, 200),
    QuotaExhausted: (45009, 200),
    RateLimited: (45009, 429),
    TicketMissing: (-1, 503),
    WeChatUnavailable: (-1, 502),
    WeChatTimedOut: (-1, 504),
}

_V = TypeVar("_V")
_Handler = Callable[[Request[Any, Any, Any], Any], Response[Any]]


def _by_class(table: Mapping[type[Refused], _V], exc: Refused, default: _V) -> _V:
    return next((table[kind] for kind in type(exc).__mro__ if kind in table), default)


def status_of(exc: Refused) -> int:
    """The HTTP status of ``exc`` in the house shape."""
    return _by_class(STATUS, exc, 400)


def wechat_errcode_of(exc: Refused) -> tuple[int, int]:
    """WeChat's errcode for ``exc`` on ``/wx``, and the HTTP status it comes with."""
    return _by_class(WECHAT, exc, (-1, 502))


def problem_type(code: str) -> str:
    """The RFC 9457 ``type`` of a code: a tag URI (RFC 4151), an identifier that is never fetched."""
    return f"tag:group-gateway,2025:problem/{code}"


class ErrorDetail(msgspec.Struct, frozen=True):
    """A machine-readable code and a sentence for people."""

    code: str
    message: str


class ErrorBody(msgspec.Struct, frozen=True):
    """The ``error`` member every house-shaped error carries (alone on WeChat's event URLs)."""

    error: ErrorDetail


class Problem(msgspec.Struct, frozen=True):
    """A house error on ``/v1``: RFC 9457 problem details, with the ``error`` member clients branch on."""

    type: str
    title: str
    status: int
    detail: str
    error: ErrorDetail


# Litestar's own refusals (routing, validation, body size), by status.
_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
}
_STORE_UNAVAILABLE = "the gateway's database is unreachable; retry shortly"
_RETRY_STORE = {"Retry-After": "1"}


def _headers(exc: Refused) -> dict[str, str]:
    return {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else {}


def _http_detail(request: Request[Any, Any, Any], exc: HTTPException) -> str:
    if exc.status_code == 413:
        limit = request.route_handler.resolve_request_max_body_size()
        return f"the request body is larger than the {limit} bytes this route accepts"
    return str(exc.detail)


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> None:
    """Logged with its type only (a message may carry data); the answer says nothing of it."""
    log.error(
        "unexpected error on %s %s: %s", request.method, request.url.path, type(exc).__name__, exc_info=exc
    )


def _store_down(request: Request[Any, Any, Any], exc: Exception) -> None:
    log.warning("store unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__)


class _House:
    """The house shape: problem details (``/v1``), or the bare ``error`` member (WeChat's push URLs)."""

    def __init__(self, *, problem: bool) -> None:
        self._problem = problem

    def respond(
        self,
        request: Request[Any, Any, Any],
        status: int,
        code: str,
        message: str,
        *,
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response[Any]:
        headers = dict(headers or {})
        if status == 401:  # RFC 9110: a 401 names the scheme that would be accepted
            headers["WWW-Authenticate"] = "Bearer"
        detail = ErrorDetail(code, message)
        if not self._problem:
            return Response(ErrorBody(detail), status_code=status, headers=headers, media_type=MediaType.JSON)
        return ProblemDetailsException(
            detail=message,
            status_code=status,
            headers=headers,
            type_=problem_type(code),
            title=title or HTTPStatus(status).phrase,
            extra={"error": detail},
        ).to_response(request)

    def refused(self, request: Request[Any, Any, Any], exc: Refused) -> Response[Any]:
        """A domain error, at its status."""
        return self.respond(
            request, status_of(exc), exc.code, exc.message, title=exc.title, headers=_headers(exc)
        )

    def http_exception(self, request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
        """Litestar's own refusals (routing, validation, body size) in the same shape."""
        if isinstance(exc, ValidationException):
            return self.refused(request, invalid_parameters(request, exc))
        status = exc.status_code
        if status >= 500:
            return self.unexpected(request, exc)
        code = _HTTP_CODES.get(status, "invalid_request")
        return self.respond(request, status, code, _http_detail(request, exc))

    def store_unavailable(self, request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        """The database is down or restarting: 503 with ``Retry-After``, so callers retry instead of
        treating it as a fault of theirs or of the gateway's code."""
        if not isinstance(exc, STORE_UNAVAILABLE):
            return self.unexpected(request, exc)
        _store_down(request, exc)
        return self.respond(request, 503, "store_unavailable", _STORE_UNAVAILABLE, headers=_RETRY_STORE)

    def unexpected(self, request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        """Anything else: 500, logged, answered without detail."""
        _unexpected(request, exc)
        return self.respond(request, 500, "internal_error", "the gateway failed; see its log")

    def table(self) -> dict[type[Exception], _Handler]:
        return {
            Refused: self.refused,
            HTTPException: self.http_exception,
            **dict.fromkeys(STORE_UNAVAILABLE, self.store_unavailable),
            Exception: self.unexpected,
        }


def _wechat(
    errcode: int, errmsg: str, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response[Any]:
    body = {"errcode": errcode, "errmsg": errmsg}
    return Response(body, status_code=status, headers=dict(headers or {}), media_type=MediaType.JSON)


def _wechat_refused(_: Request[Any, Any, Any], exc: Refused) -> Response[Any]:
    """A domain error in WeChat's shape: its errcode (`WECHAT`) and its message."""
    errcode, status = wechat_errcode_of(exc)
    errmsg = exc.message
    if isinstance(exc, RateLimited):  # WeChat's words for 45009, then the gateway's
        errmsg = (
            f"reach max api rate limit: client '{exc.client_id}' is past the gateway's per-client rate "
            f"limit; retry after {exc.retry_after} s"
        )
    return _wechat(errcode, errmsg, status, _headers(exc))


def _wechat_own(_: Request[Any, Any, Any], exc: WxError) -> Response[Any]:
    """The proxy's refusal in WeChat's words, as WeChat answers them: 200."""
    return _wechat(exc.errcode, exc.errmsg)


def _wechat_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Litestar's refusals at their status: 40066 (invalid url) for 404, 40006 (file too large) for 413,
    47001 (data format error) for the rest."""
    status = exc.status_code
    if status >= 500:
        return _HOUSE.unexpected(request, exc)
    errcode = {404: 40066, 413: 40006}.get(status, 47001)
    return _wechat(errcode, _http_detail(request, exc), status)


def _wechat_store_unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The database is down: ``-1``, "system error", with 503 and ``Retry-After``."""
    if not isinstance(exc, STORE_UNAVAILABLE):
        return _HOUSE.unexpected(request, exc)
    _store_down(request, exc)
    return _wechat(-1, f"system error: {_STORE_UNAVAILABLE}", 503, _RETRY_STORE)


def _handlers(table: Mapping[type[Exception], _Handler]) -> ExceptionHandlersMap:
    # Each map is whole (it maps Exception), so the wrappers in front of Litestar can use it alone.
    return cast("ExceptionHandlersMap", dict(table))


_HOUSE = _House(problem=True)
HOUSE_HANDLERS = _handlers(_HOUSE.table())
"""``/v1`` and every route without a router of its own: problem details."""
PUSH_HANDLERS = _handlers(_House(problem=False).table())
"""WeChat's event and message URLs: the ``error`` member as plain JSON (WeChat reads only the status)."""
WECHAT_HANDLERS = _handlers(
    _HOUSE.table()
    | {
        Refused: _wechat_refused,
        WxError: _wechat_own,
        HTTPException: _wechat_http_exception,
        **dict.fromkeys(STORE_UNAVAILABLE, _wechat_store_unavailable),
    }
)
"""``/wx``: WeChat's shape (an unexpected error stays the house's 500)."""

"""The one mapping from errors to HTTP responses: ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from gateway.errors import ApiError, RateLimited, WxError
from gateway.http.params import invalid_parameters
from gateway.store.database import STORE_UNAVAILABLE

__all__ = ["ErrorBody", "ErrorDetail", "exception_handlers"]

log = logging.getLogger(__name__)


class ErrorDetail(msgspec.Struct, frozen=True):
    """A machine-readable code and a sentence for people."""

    code: str
    message: str


class ErrorBody(msgspec.Struct, frozen=True):
    """Every JSON error the gateway answers."""

    error: ErrorDetail


def _respond(status: int, code: str, message: str) -> Response[ErrorBody]:
    return Response(ErrorBody(ErrorDetail(code, message)), status_code=status, media_type=MediaType.JSON)


def wx_error_handler(_: Request[Any, Any, Any], exc: WxError) -> Response[dict[str, object]]:
    """A refusal on /wx, in WeChat's own shape."""
    return Response(
        {"errcode": exc.errcode, "errmsg": exc.errmsg}, status_code=exc.status, media_type=MediaType.JSON
    )


def api_error_handler(_: Request[Any, Any, Any], exc: ApiError) -> Response[ErrorBody]:
    """An ApiError as raised."""
    return _respond(exc.status, exc.code, exc.message)


def rate_limited_handler(
    request: Request[Any, Any, Any], exc: RateLimited
) -> Response[ErrorBody] | Response[dict[str, object]]:
    """429 with ``Retry-After``; on /wx in WeChat's shape with errcode 45009 (see
    ``gateway.access.ratelimit``)."""
    headers = {"Retry-After": str(exc.retry_after)}
    if request.url.path.startswith("/wx/"):
        errmsg = (
            f"reach max api rate limit: client '{exc.client_id}' is past the gateway's per-client rate "
            f"limit; retry after {exc.retry_after} s"
        )
        return Response(
            {"errcode": 45009, "errmsg": errmsg},
            status_code=429,
            headers=headers,
            media_type=MediaType.JSON,
        )
    message = f"client '{exc.client_id}' is past its rate limit; retry after {exc.retry_after} s"
    return Response(
        ErrorBody(ErrorDetail("rate_limited", message)),
        status_code=429,
        headers=headers,
        media_type=MediaType.JSON,
    )


_CODES = {
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


def http_exception_handler(
    request: Request[Any, Any, Any], exc: HTTPException
) -> Response[ErrorBody] | Response[dict[str, object]]:
    """Litestar's own refusals (routing, validation, body size) in the same shape; WeChat's on /wx."""
    status = exc.status_code
    detail = str(exc.detail)
    if status == 413:
        limit = request.route_handler.resolve_request_max_body_size()
        detail = f"the request body is larger than the {limit} bytes this route accepts"
    if request.url.path.startswith("/wx/") and status < 500:
        # 40006: WeChat's own errcode for a file too large
        errcode = {404: 40066, 413: 40006}.get(status, 47001)
        return wx_error_handler(request, WxError(errcode, detail, status=status))
    if isinstance(exc, ValidationException):
        refused = invalid_parameters(request, exc)
        return _respond(refused.status, refused.code, refused.message)
    if status >= 500:
        return unexpected_error_handler(request, exc)
    return _respond(status, _CODES.get(status, "invalid_request"), detail)


def store_unavailable_handler(
    request: Request[Any, Any, Any], exc: Exception
) -> Response[ErrorBody] | Response[dict[str, object]]:
    """The database is down or restarting: 503 with ``Retry-After`` (``-1``, "system busy", on /wx), so
    callers retry instead of treating it as a fault of theirs or of the gateway's code."""
    if not isinstance(exc, STORE_UNAVAILABLE):
        return unexpected_error_handler(request, exc)
    log.warning("store unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    headers = {"Retry-After": "1"}
    message = "the gateway's database is unreachable; retry shortly"
    if request.url.path.startswith("/wx/"):
        body = {"errcode": -1, "errmsg": f"system error: {message}"}
        return Response(body, status_code=503, headers=headers, media_type=MediaType.JSON)
    return Response(
        ErrorBody(ErrorDetail("store_unavailable", message)),
        status_code=503,
        headers=headers,
        media_type=MediaType.JSON,
    )


def unexpected_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    """Anything else: logged with its type only (a message may carry data), answered without detail."""
    log.error(
        "unexpected error on %s %s: %s", request.method, request.url.path, type(exc).__name__, exc_info=exc
    )
    return _respond(HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", "the gateway failed; see its log")


exception_handlers = {
    ApiError: api_error_handler,
    RateLimited: rate_limited_handler,
    WxError: wx_error_handler,
    HTTPException: http_exception_handler,
    **dict.fromkeys(STORE_UNAVAILABLE, store_unavailable_handler),
    Exception: unexpected_error_handler,
}

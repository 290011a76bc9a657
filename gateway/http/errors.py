"""The one mapping from errors to HTTP responses: ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from gateway.errors import ApiError, WxError

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
    if request.url.path.startswith("/wx/") and status < 500:
        return wx_error_handler(
            request, WxError(40066 if status == 404 else 47001, str(exc.detail), status=status)
        )
    if isinstance(exc, ValidationException):
        return _respond(422, "invalid_request", _validation_message(exc))
    if status >= 500:
        return unexpected_error_handler(request, exc)
    return _respond(status, _CODES.get(status, "invalid_request"), str(exc.detail))


def _validation_message(exc: ValidationException) -> str:
    """Litestar's validation details in one sentence: which field, what is wrong (never the value)."""
    details = exc.extra if isinstance(exc.extra, list) else []
    parts = []
    for detail in details:
        if isinstance(detail, dict):
            where = detail.get("key")
            parts.append(f"{where}: {detail.get('message')}" if where else str(detail.get("message")))
    return "; ".join(parts) or str(exc.detail)


def unexpected_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    """Anything else: logged with its type only (a message may carry data), answered without detail."""
    log.error(
        "unexpected error on %s %s: %s", request.method, request.url.path, type(exc).__name__, exc_info=exc
    )
    return _respond(HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", "the gateway failed; see its log")


exception_handlers = {
    ApiError: api_error_handler,
    WxError: wx_error_handler,
    HTTPException: http_exception_handler,
    Exception: unexpected_error_handler,
}

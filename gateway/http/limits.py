"""Request body caps: every route has one, and a body past it is refused with 413, nothing processed.

The app's cap (`MAX_BODY_BYTES`, 1 MiB) covers the ``/v1`` JSON bodies and the pages' forms; routes
that need another set ``request_max_body_size`` themselves: WeChat's pushes 64 KiB
(``gateway.callbacks.pushes.MAX_PUSH_BYTES``), ``/wx`` 20 MiB (``gateway.http.wx.MAX_UPLOAD_BYTES``: media
uploads). Litestar counts a body as it streams in; `refuse_announced_oversize` refuses one whose
``Content-Length`` already says too much, before authentication and on routes that never read a body.
"""

from __future__ import annotations

import math
from typing import Any

from litestar import Request
from litestar.exceptions.http_exceptions import RequestEntityTooLarge

__all__ = ["MAX_BODY_BYTES", "refuse_announced_oversize"]

MAX_BODY_BYTES = 1024 * 1024


async def refuse_announced_oversize(request: Request[Any, Any, Any]) -> None:
    """``before_request``: 413 when ``Content-Length`` is past the route's cap (400 when malformed)."""
    # Most requests (the token route's GETs) carry no Content-Length: look for it in the raw headers
    # before asking Litestar, whose header parsing costs more than the rest of this check.
    if not any(name == b"content-length" for name, _ in request.scope["headers"]):
        return
    announced = request.content_length
    if announced is not None and announced > (
        request.route_handler.resolve_request_max_body_size() or math.inf
    ):
        raise RequestEntityTooLarge

"""Query parameters read by hand (so a refusal names the parameter in the house error shape)."""

from __future__ import annotations

from gateway.errors import ApiError

__all__ = ["whole_number"]


def whole_number(raw: str | None, name: str, default: int | None, low: int, high: int) -> int | None:
    """``raw`` as a whole number from ``low`` to ``high`` (``default`` when absent or empty); 422 naming
    ``name`` otherwise, or 400 ``invalid_cursor`` for a numeric ``cursor``."""
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        status, code = (400, "invalid_cursor") if name == "cursor" else (422, "invalid_request")
        raise ApiError(status, code, f"{name}: must be a whole number from {low} to {high}")
    return int(raw)

"""Keeping secrets out of httpx's log lines.

httpx logs every request at INFO as ``HTTP Request: GET <url> "HTTP/1.1 200 OK"``, and WeChat takes its
tokens in the query string (``access_token=…``, ``component_access_token=…``), as a subscriber's URL may
take its own. ``gateway serve`` sets httpx's logger to WARNING, but a process that embeds the app, or an
operator who turns every logger to DEBUG, would see those lines: the filter installed here replaces every
query value of them with ``redacted``, whatever the logging configuration. Names stay, for debugging.
"""

from __future__ import annotations

import logging

import httpx

__all__ = ["redact_httpx_queries"]

_MASK = "redacted"


class _QueryRedaction(logging.Filter):
    """Masks the query values of every URL among a record's arguments; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_masked(arg) for arg in record.args)
        return True


def _masked(value: object) -> object:
    if not isinstance(value, httpx.URL) or not value.query:
        return value
    return value.copy_with(params=[(name, _MASK) for name, _ in value.params.multi_items()])


_FILTER = _QueryRedaction()


def redact_httpx_queries() -> None:
    """Install the filter on httpx's logger; installing it again changes nothing."""
    logging.getLogger("httpx").addFilter(_FILTER)

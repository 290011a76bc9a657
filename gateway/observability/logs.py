"""Logging for the process: every line, the gateway's and its libraries' alike, through one handler.

``json`` writes one JSON object per line (``timestamp``, ``level``, ``logger``, ``event`` — the message —,
``exception`` when there is one, any ``extra`` the call passed, and the ``request_id`` of the HTTP request
the line was logged in: ``gateway.http.observe`` sets ``REQUEST_ID``). ``text`` writes the same as
readable lines, for a terminal. The code logs through the standard library, so filters on loggers
(``gateway.wechat.log_redaction``) run before anything is written.

Every proxied call writes a line, so the JSON formatter builds it straight from the record and encodes
it with msgspec: structlog's ``ProcessorFormatter`` copied each record and ran a chain of processors,
twice the instructions per line, 6 % of a proxied call's (``docs/benchmarks.md``). structlog still
renders text lines and turns exceptions into JSON.
"""

from __future__ import annotations

import datetime
import logging
import sys
from contextvars import ContextVar
from typing import Any, TextIO, get_args

import msgspec
import structlog
from structlog.tracebacks import ExceptionDictTransformer

from gateway.errors import ConfigError
from gateway.settings import LogFormat, LogLevel

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "REQUEST_CLIENT", "REQUEST_ID", "configure_logging"]

LOG_FORMATS: tuple[LogFormat, ...] = get_args(LogFormat)
LOG_LEVELS: tuple[LogLevel, ...] = get_args(LogLevel)
# The request a line is logged in, if any: set around each HTTP request by ``gateway.http.observe``.
REQUEST_ID: ContextVar[str | None] = ContextVar("gateway_request_id", default=None)
# The client an HTTP request came from, once known, where no guard names it (the /wx proxy identifies its
# callers by gateway token or key): set by whoever identified it, read by ``gateway.http.observe``'s access
# line, reset around each request.
REQUEST_CLIENT: ContextVar[str | None] = ContextVar("gateway_request_client", default=None)
# Each upstream request at INFO would drown the gateway's own lines (and carry query strings).
_CHATTY = ("httpx", "httpcore", "alembic")
# What every record has; anything else on it came from ``extra=``. ``message`` and ``asctime`` are what
# another handler's formatter (pytest's, say) may have left on the record.
_RECORD_KEYS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
# Tracebacks without the frames' local variables: structlog (and Rich, for text) would write them out by
# default, and a frame that handles a secret holds it in a local.
_exception_as_dicts = ExceptionDictTransformer(show_locals=False)
# Values JSON has no form for (an object passed in ``extra=``) are written as their repr.
_json = msgspec.json.Encoder(enc_hook=repr)


class _Handler(logging.StreamHandler[TextIO]):
    """The handler ``configure_logging`` installs: recognised, so that configuring again replaces it."""


class _LineFormatter(logging.Formatter):
    """A record as the fields of a line, in the order they are written."""

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        """The message, the request id, level, logger, extras and the time of the call."""
        fields: dict[str, Any] = {"event": record.getMessage()}
        request_id = REQUEST_ID.get()
        if request_id is not None:
            fields["request_id"] = request_id
        fields["level"] = record.levelname.lower()
        fields["logger"] = record.name
        for key in record.__dict__.keys() - _RECORD_KEYS:
            fields[key] = record.__dict__[key]
        stamp = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        fields["timestamp"] = stamp.isoformat(timespec="microseconds").replace("+00:00", "Z")
        return fields


class _JsonFormatter(_LineFormatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = self.fields(record)
        if record.exc_info and record.exc_info[0] is not None:
            fields["exception"] = _exception_as_dicts(record.exc_info)
        if record.stack_info:
            fields["stack"] = record.stack_info
        return _json.encode(fields).decode()


class _TextFormatter(_LineFormatter):
    _render = structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)

    def format(self, record: logging.LogRecord) -> str:
        fields = self.fields(record)
        if record.exc_info and record.exc_info[0] is not None:
            fields["exc_info"] = record.exc_info
        if record.stack_info:
            fields["stack"] = record.stack_info
        return str(self._render(None, fields["level"], fields))


def configure_logging(level: str = "INFO", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Send every log record at ``level`` and above to ``stream`` (stderr) in ``fmt``.

    Raises ConfigError for a level or format it does not know. Configuring again replaces what an
    earlier call installed and leaves other handlers (pytest's, say) alone.
    """
    level = level.upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"GATEWAY_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    if fmt not in LOG_FORMATS:
        raise ConfigError(f"GATEWAY_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    handler = _Handler(stream or sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    # No line shows the thread or process a record came from, and looking them up for each record was
    # half the cost of a record (the access log writes one per request).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    for chatty in _CHATTY:
        logging.getLogger(chatty).setLevel(logging.WARNING)

"""Logging for the process: every line, the gateway's and its libraries' alike, through one handler.

``json`` writes one JSON object per line (``timestamp``, ``level``, ``logger``, ``event`` — the message —,
``exception`` when there is one, and whatever context is bound, such as the ``request_id`` of the HTTP
request the line was logged in: ``gateway.http.observe`` binds it). ``text`` writes the same as readable
lines, for a terminal. The code keeps logging through the standard library; structlog only formats, so
filters on loggers (``gateway.log_redaction``) run before anything is written.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog
from structlog.processors import ExceptionRenderer
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import Processor

from gateway.errors import ConfigError

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "configure_logging"]

LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Each upstream request at INFO would drown the gateway's own lines (and carry query strings).
_CHATTY = ("httpx", "httpcore", "alembic")


class _Handler(logging.StreamHandler[TextIO]):
    """The handler ``configure_logging`` installs: recognised, so that configuring again replaces it."""


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
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor
    # Tracebacks without the frames' local variables: structlog (and Rich, for text) would write them
    # out, and a frame that handles a secret holds it in a local.
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        shared.append(ExceptionRenderer(ExceptionDictTransformer(show_locals=False)))
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    handler = _Handler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    for chatty in _CHATTY:
        logging.getLogger(chatty).setLevel(logging.WARNING)
    # structlog's own loggers, should a module use one, end in the same handler.
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )

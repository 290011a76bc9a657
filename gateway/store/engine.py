"""The async engine for SQLite (one process) or PostgreSQL (several replicas)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import URL, event, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = ["SQLITE_CONNECT_ARGS", "create_engine", "sqlite_file", "sqlite_pragmas"]

# Concurrent writers wait for each other up to 30 s rather than fail at once.
SQLITE_CONNECT_ARGS = {"timeout": 30}


def create_engine(url: str) -> AsyncEngine:
    """Create the engine for ``url``; SQLite gets WAL and a busy timeout so concurrent writers wait."""
    if url.startswith("sqlite"):
        pooling: dict[str, Any] = {}
        if sqlite_file(make_url(url)) is not None:
            # A file's connections are kept (15, and 5 more in a burst): an overflow connection is a new
            # aiosqlite thread and three PRAGMAs, which bursts of 5 + 10 used to open and close each time.
            pooling = {"pool_size": 15, "max_overflow": 5}
        engine = create_async_engine(url, connect_args=SQLITE_CONNECT_ARGS, **pooling)
        event.listen(engine.sync_engine, "connect", sqlite_pragmas)
        return engine
    # 5 + 10 per replica: several replicas must fit PostgreSQL's default max_connections (100).
    return create_async_engine(url, pool_size=5, max_overflow=10, pool_pre_ping=True)


def sqlite_file(url: URL) -> str | None:
    """The file of a SQLite database URL; None for PostgreSQL or an in-memory SQLite."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return url.database


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL (readers never wait for the writer), synchronous=NORMAL (a commit survives the process, not
    always the machine: WAL is synced at checkpoints), foreign keys enforced."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()

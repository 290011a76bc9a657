"""The async engine for SQLite (one process) or PostgreSQL (several replicas)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = ["create_engine"]


def create_engine(url: str) -> AsyncEngine:
    """Create the engine for ``url``; SQLite gets WAL and a busy timeout so concurrent writers wait."""
    if url.startswith("sqlite"):
        pooling: dict[str, Any] = {}
        if make_url(url).database not in (None, "", ":memory:"):
            # A file's connections are kept (15, and 5 more in a burst): an overflow connection is a new
            # aiosqlite thread and three PRAGMAs, which bursts of 5 + 10 used to open and close each time.
            pooling = {"pool_size": 15, "max_overflow": 5}
        engine = create_async_engine(url, connect_args={"timeout": 30}, **pooling)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # 5 + 10 per replica: several replicas must fit PostgreSQL's default max_connections (100).
    return create_async_engine(url, pool_size=5, max_overflow=10, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()

"""What every part of the store shares: the engine, sessions, the sealing box and the clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from gateway.crypto import SecretBox

__all__ = ["STORE_UNAVAILABLE", "Database"]

# What a database that is down or restarting raises: the driver's errors as SQLAlchemy wraps them, a pool
# timeout, and the socket's own (asyncpg's connect raises ConnectionRefusedError unwrapped).
STORE_UNAVAILABLE: tuple[type[Exception], ...] = (DBAPIError, SATimeoutError, ConnectionError)


class Database:
    """One engine with its session factory, the at-rest box and the store's clock."""

    def __init__(self, engine: AsyncEngine, box: SecretBox, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.box = box
        self.clock = clock
        self.sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)

    @property
    def is_postgresql(self) -> bool:
        """Whether the engine speaks PostgreSQL (else SQLite)."""
        return self.engine.dialect.name == "postgresql"

    async def delete_in_chunks(self, statement: Delete, chunk: int) -> int:
        """Run ``statement`` (a DELETE of at most ``chunk`` rows) in a transaction of its own, again and
        again until it deletes fewer; how many rows went. Short transactions: a large purge never holds
        a replica's writes up for long."""
        removed = 0
        while True:
            async with self.engine.begin() as conn:
                gone = int((await conn.execute(statement)).rowcount)
            removed += gone
            if gone < chunk:
                return removed

    def insert(self, table: Any) -> postgresql.Insert | sqlite.Insert:
        """INSERT for ``table`` (a model or a Core table) with the dialect's ON CONFLICT support (spelled
        alike on both)."""
        if self.is_postgresql:
            return postgresql.insert(table)
        return sqlite.insert(table)

"""What every part of the store shares: the engine, sessions, the sealing box and the clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Connection, Delete, Engine, event
from sqlalchemy import create_engine as create_blocking_engine
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from gateway.crypto import SecretBox
from gateway.store.engine import SQLITE_CONNECT_ARGS, sqlite_file, sqlite_pragmas

__all__ = ["STORE_UNAVAILABLE", "Database"]

T = TypeVar("T")

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
        self._file = sqlite_file(engine.url)
        self._blocking: Engine | None = None
        self._writer: ThreadPoolExecutor | None = None

    async def write(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one transaction, committed when it returns, and return what it returned.

        On a SQLite file, ``work`` runs in the store's writer thread on a plain ``sqlite3`` connection to
        the same file: one hand-off for the whole transaction, where aiosqlite makes one for every
        statement, cursor, fetch and commit (nine for a batch of pushes, costing more than the SQL
        itself), and one writer, so these transactions never wait for each other in SQLite's busy
        handler. On PostgreSQL or an in-memory SQLite it runs on the async engine's connection.
        """
        if self._file is None:
            async with self.engine.begin() as conn:
                return await conn.run_sync(work)
        if self._blocking is None or self._writer is None:
            # Closed by `close` from another thread, once the writer has finished.
            self._blocking = create_blocking_engine(
                self.engine.url.set(drivername="sqlite"),
                connect_args={**SQLITE_CONNECT_ARGS, "check_same_thread": False},
                pool_size=1,
            )
            event.listen(self._blocking, "connect", sqlite_pragmas)
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        blocking = self._blocking
        return await asyncio.get_running_loop().run_in_executor(self._writer, _in_transaction, blocking, work)

    def close(self) -> None:
        """Close what `write` opened, once its last transaction is done (the engine itself is the
        owner's to dispose)."""
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        if self._blocking is not None:
            self._blocking.dispose()
            self._blocking = None

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


def _in_transaction(engine: Engine, work: Callable[[Connection], T]) -> T:
    with engine.begin() as conn:
        return work(conn)

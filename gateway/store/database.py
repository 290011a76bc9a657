"""What every part of the store shares: the engine, sessions, the sealing box and the clock."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection, Delete, Engine, event
from sqlalchemy import create_engine as create_blocking_engine
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, OperationalError
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
        self._inline: Engine | None = None  # the event loop's connection: never waits for a lock
        self._blocking: Engine | None = None  # the writer thread's: waits for a lock like the others
        self._writer: ThreadPoolExecutor | None = None
        self._inline_commits = 0
        self._checkpoint: Future[None] | None = None

    async def write(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one transaction, committed when it returns, and return what it returned.

        On a SQLite file, ``work`` runs on the event loop's thread, on a plain ``sqlite3`` connection that
        takes the write lock first (``BEGIN IMMEDIATE``) and never waits for it. A transaction of a few
        rows costs less there than handing it to another thread: aiosqlite makes a hand-off for every
        statement, cursor, fetch and commit, and a thread of our own still has to take the interpreter's
        lock back from the loop after each SQLite call. When another connection holds the write lock, it
        may be one of aiosqlite's, whose commit needs this very loop: ``work`` then runs in the store's
        writer thread instead, which waits for the lock as the others do. The loop's connection leaves
        checkpoints (copying the WAL into the database, with an fsync) to that thread too, every
        `_CHECKPOINT_EVERY` commits, and the writes that come meanwhile wait for it there.

        On PostgreSQL or an in-memory SQLite it runs on the async engine's connection.
        """
        if self._file is None:
            async with self.engine.begin() as async_conn:
                return await async_conn.run_sync(work)
        if self._checkpoint is not None and not self._checkpoint.done():
            # Queued behind the checkpoint, as SQLite's own autocheckpoint makes the next writer wait: the
            # first write after it finds the WAL copied and starts it over. Writing on meanwhile would
            # keep adding frames it has not copied, and the WAL would grow for as long as pushes come.
            return await self._in_writer_thread(work)
        if self._inline is None:
            self._inline = self._sqlite_engine(timeout=0, autocheckpoint=False)
        try:
            with self._inline.connect() as conn, _immediate(conn, nowait=True):
                result = work(conn)
        except _Locked:
            return await self._in_writer_thread(work)
        self._inline_commits += 1
        if self._inline_commits % _CHECKPOINT_EVERY == 0:
            self._start_checkpoint()
        return result

    async def close(self) -> None:
        """Close what `write` opened, once the writer thread's last transaction is done (the engine
        itself is the owner's to dispose). Waits off the loop: that transaction may be waiting for a
        lock that one of the loop's own connections must release."""
        if self._writer is not None:
            await asyncio.to_thread(self._writer.shutdown, wait=True)
            self._writer = None
        for engine in (self._inline, self._blocking):
            if engine is not None:
                engine.dispose()
        self._inline = self._blocking = None
        self._checkpoint = None
        self._inline_commits = 0

    async def _in_writer_thread(self, work: Callable[[Connection], T]) -> T:
        writer, blocking = self._writer_thread()
        return await asyncio.get_running_loop().run_in_executor(writer, _in_transaction, blocking, work)

    def _writer_thread(self) -> tuple[ThreadPoolExecutor, Engine]:
        """The writer thread and its engine, started on first use."""
        if self._writer is None or self._blocking is None:
            self._blocking = self._sqlite_engine(timeout=SQLITE_CONNECT_ARGS["timeout"], autocheckpoint=True)
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        return self._writer, self._blocking

    def _start_checkpoint(self) -> None:
        """Copy the WAL into the database in the writer thread (PASSIVE: readers are not waited for).
        The transaction that called it has committed: whatever happens here must not make it look
        failed, and the next checkpoint copies what this one leaves."""
        try:
            writer, blocking = self._writer_thread()
            self._checkpoint = writer.submit(_checkpoint, blocking)
        except Exception:  # a closed store: nothing left to copy into
            log.warning("WAL checkpoint not started", exc_info=True)
            return
        self._checkpoint.add_done_callback(_report_checkpoint)

    def _sqlite_engine(self, *, timeout: float, autocheckpoint: bool) -> Engine:
        """A blocking engine on the store's SQLite file: one connection, ``BEGIN IMMEDIATE`` for every
        transaction, waiting up to ``timeout`` seconds for the write lock."""
        engine = create_blocking_engine(
            self.engine.url.set(drivername="sqlite"),
            # Any thread may close it; one uses it at a time (pool of one).
            connect_args={**SQLITE_CONNECT_ARGS, "timeout": timeout, "check_same_thread": False},
            pool_size=1,
            max_overflow=0,
        )
        event.listen(engine, "connect", sqlite_pragmas)
        event.listen(engine, "connect", _driver_transactions_off)
        if not autocheckpoint:
            event.listen(engine, "connect", _autocheckpoint_off)
        return engine

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


# Commits on the loop's connection between two checkpoints: with batches of a few pages, about SQLite's own
# 1,000-page autocheckpoint.
_CHECKPOINT_EVERY = 256

log = logging.getLogger(__name__)


class _Locked(Exception):
    """Another connection holds the write lock."""


@contextmanager
def _immediate(conn: Connection, *, nowait: bool = False) -> Iterator[None]:
    """A transaction begun with ``BEGIN IMMEDIATE``: it has the write lock from its first statement on, so
    ``work`` never meets a lock half-way. With ``nowait``, a held lock raises `_Locked` (before any work);
    otherwise the driver's error after its busy timeout, as on any other connection."""
    try:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    except OperationalError as exc:
        # Extended codes too (SQLITE_BUSY_RECOVERY while another connection recovers the WAL).
        if nowait and (getattr(exc.orig, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_BUSY:
            raise _Locked from exc
        raise
    try:
        yield
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


def _in_transaction(engine: Engine, work: Callable[[Connection], T]) -> T:
    with engine.connect() as conn, _immediate(conn):
        return work(conn)


def _checkpoint(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")


def _report_checkpoint(done: Future[None]) -> None:
    if not done.cancelled() and done.exception() is not None:
        # The next one copies what this one left; SQLite's readers and writers are not affected.
        log.warning("WAL checkpoint failed: %s", done.exception())


def _driver_transactions_off(dbapi_connection: Any, _record: Any) -> None:
    # The sqlite3 module would begin a deferred transaction itself before the first write; `_immediate`
    # begins it instead (SQLAlchemy's documented recipe for pysqlite).
    dbapi_connection.isolation_level = None


def _autocheckpoint_off(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")

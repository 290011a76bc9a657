"""The log of accepted pushes, written by group commit.

Every push must be stored before WeChat hears ``success``, and one transaction per push made the store the
bottleneck of the event URL: on SQLite each transaction is a dozen hand-offs to aiosqlite's thread, and
concurrent writers queue in SQLite's busy handler, which sleeps up to 100 ms at a time. Here the pushes
that arrive while a transaction is being written wait for the next one, and each transaction writes its
whole batch with two statements: one multi-row INSERT of the pushes that skips those seen before
(RETURNING the new ones) and one upsert per platform of the newest verify ticket among them. On a SQLite
file the transaction is one hand-off to a worker thread (`Database.write`). Each caller
is answered when its batch has committed; a batch that fails is retried push by push, so a push the
database refuses fails alone, and nothing is acknowledged that is not stored.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import Connection

from gateway.store.database import Database
from gateway.store.tables import ComponentPush, ComponentTicket

__all__ = ["PendingPush", "PushLog"]

# Pushes per transaction: enough for any burst WeChat sends, few enough that a batch's parameters
# (eight per push) stay far below SQLite's limit of 32,766.
MAX_BATCH = 256

_PUSHES = ComponentPush.__table__  # type: ignore[attr-defined]
_TICKETS = ComponentTicket.__table__  # type: ignore[attr-defined]
_KEY = ("platform_id", "msg_signature", "nonce")


@dataclass(frozen=True)
class PendingPush:
    """One push to record: its row (the ``component_pushes`` columns, sealed payload included) and, for a
    verify ticket, the ticket in the clear. A ticket is sealed as it is written, and only when it is the
    newest of its batch: the others would be sealed to be thrown away."""

    row: dict[str, Any]
    ticket: str | None = field(default=None, repr=False)


class _Waiting(NamedTuple):
    push: PendingPush
    # Awaited by the caller alone: cancelling it (a client gone) cancels only this future, and a batch's
    # failure is set only on futures still awaited, so no exception is left unretrieved.
    answer: asyncio.Future[bool]


class PushLog:
    """Records pushes in batches: `record` returns once its push is stored (True) or was stored before
    (False: a retry or a replay), and raises what the transaction raised if it failed."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._insert_new = (
            db.insert(_PUSHES)
            .on_conflict_do_nothing(index_elements=list(_KEY))
            .returning(*(_PUSHES.c[name] for name in _KEY))
        )
        tickets = db.insert(_TICKETS)
        # Pushes may arrive out of order: an older ticket never replaces a newer one.
        self._upsert_ticket = tickets.on_conflict_do_update(
            index_elements=["platform_id"],
            set_={name: tickets.excluded[name] for name in ("ticket_sealed", "create_time", "received_at")},
            where=_TICKETS.c.create_time <= tickets.excluded.create_time,
        )
        self._queue: list[_Waiting] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(self, push: PendingPush) -> bool:
        """Queue ``push`` for the next transaction and wait for its commit."""
        waiting = _Waiting(push, asyncio.get_running_loop().create_future())
        self._queue.append(waiting)
        writer = self._writer
        if writer is None or writer.done() or writer.get_loop() is not asyncio.get_running_loop():
            self._writer = asyncio.create_task(self._write_queued(), name="push-log-writer")
        # The batch is written whether or not this caller still waits (a client that hung up is
        # answered by WeChat's retry, found to be a duplicate).
        return await waiting.answer

    async def _write_queued(self) -> None:
        batch: list[_Waiting] = []
        try:
            while self._queue:
                batch = self._queue[:MAX_BATCH]
                del self._queue[: len(batch)]
                await self._write_batch(batch)
        except BaseException as exc:  # cancelled (shutdown): every caller still waiting hears of it
            _fail(batch + self._queue, exc)
            self._queue.clear()
            raise

    async def _write_batch(self, batch: list[_Waiting]) -> None:
        try:
            winners = await self._write(batch)
        except Exception as exc:
            if len(batch) == 1:
                _fail(batch, exc)
                return
            # One bad push must not fail the others: each is tried again in a transaction of its own
            # (when the database is down, each fails alike).
            for waiting in batch:
                await self._write_batch([waiting])
            return
        _settle(batch, winners)

    async def _write(self, batch: list[_Waiting]) -> list[_Waiting]:
        """Write ``batch`` in one transaction; the callers whose pushes were stored now."""
        pushes = [waiting.push for waiting in batch]
        inserted = await self._db.write(lambda conn: self._insert(conn, pushes))
        return [batch[i] for i in inserted]

    def _insert(self, conn: Connection, pushes: list[PendingPush]) -> list[int]:
        """Insert ``pushes`` but those seen before, and upsert the newest ticket among those inserted
        now; their positions in ``pushes`` (of a push there twice, the first: a later copy changes
        nothing)."""
        # Rows in key order, tickets in platform order: two replicas' batches on PostgreSQL then take
        # their locks in one order and cannot deadlock on each other. An executemany with RETURNING:
        # SQLAlchemy sends it as multi-row INSERTs ("insertmanyvalues") from one statement compiled once,
        # where .values([...]) compiles anew for each batch size.
        rows = sorted((push.row for push in pushes), key=_key)
        stored = {tuple(row) for row in conn.execute(self._insert_new, rows)}
        inserted = []
        for i, push in enumerate(pushes):
            key = _key(push.row)
            if key in stored:
                stored.remove(key)
                inserted.append(i)
        newest: dict[str, tuple[dict[str, Any], str]] = {}  # platform -> (row, ticket)
        for push in (pushes[i] for i in inserted):
            if push.ticket is None:
                continue
            held = newest.get(push.row["platform_id"])
            if held is None or push.row["create_time"] >= held[0]["create_time"]:
                newest[push.row["platform_id"]] = (push.row, push.ticket)
        if newest:
            conn.execute(self._upsert_ticket, [self._sealed_ticket(*newest[p]) for p in sorted(newest)])
        return inserted

    def _sealed_ticket(self, row: dict[str, Any], ticket: str) -> dict[str, Any]:
        """The ``component_tickets`` values of the verify ticket of the push of ``row``."""
        platform_id = row["platform_id"]
        return {
            "platform_id": platform_id,
            "ticket_sealed": self._db.box.seal(ticket, context=f"ticket:{platform_id}"),
            "create_time": row["create_time"],
            "received_at": row["received_at"],
        }


def _settle(batch: list[_Waiting], winners: list[_Waiting]) -> None:
    """Answer each caller: True when its push was stored now, False when it had been before."""
    stored_now = {id(waiting.answer) for waiting in winners}
    for waiting in batch:
        if not waiting.answer.done():
            waiting.answer.set_result(id(waiting.answer) in stored_now)


def _fail(batch: list[_Waiting], exc: BaseException) -> None:
    for waiting in batch:
        if waiting.answer.done():
            continue
        if isinstance(exc, asyncio.CancelledError):
            waiting.answer.cancel()
        else:
            waiting.answer.set_exception(exc)


def _key(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[name] for name in _KEY)

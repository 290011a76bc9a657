"""The log of accepted pushes, written by group commit.

Every push must be stored before WeChat hears ``success``, and one transaction per push made the store the
bottleneck of the event URL. Here the pushes that arrive while a transaction is being written wait for the
next one, and each transaction writes its whole batch with at most two statements: one multi-row INSERT of
the other events (authorization events above all) that skips those seen before (RETURNING the new ones),
and one upsert per platform of the newest verify ticket among them.

A verify ticket's push leaves no row of its own: its one lasting effect is the newest ticket, and the
ticket's row names the push that carried it, which makes it the replay guard (a retry of that push, or any
older push, changes nothing). A replay row per ticket would cost more than everything else in the batch: its
unique key is random, so each one dirties a page of the index of its own.

Each caller is answered when its batch has committed; a batch that fails is retried push by push, so a push
the database refuses fails alone, and nothing is acknowledged that is not stored.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import Connection, and_, or_

from gateway.store.database import Database
from gateway.store.tables import ComponentPush, ComponentTicket

__all__ = ["PendingPush", "PushLog"]

# Pushes per transaction: enough for any burst WeChat sends, few enough that a batch's parameters
# (eight per push) stay far below SQLite's limit of 32,766.
MAX_BATCH = 256

_PUSHES = ComponentPush.__table__  # type: ignore[attr-defined]
_TICKETS = ComponentTicket.__table__  # type: ignore[attr-defined]
_KEY = ("platform_id", "msg_signature", "nonce")
_TICKET_VALUES = ("ticket_sealed", "create_time", "received_at", "msg_signature", "nonce")


@dataclass(frozen=True)
class PendingPush:
    """One push to record: its row (the ``component_pushes`` columns, sealed payload included) and, for a
    verify ticket, the ticket in the clear. A ticket's row is not inserted: it gives the ticket's
    ``create_time``, ``received_at`` and push identity. The ticket is sealed as it is written, and only
    when it is the newest of its batch: the others would be sealed to be thrown away."""

    row: dict[str, Any]
    ticket: str | None = field(default=None, repr=False)


class _Waiting(NamedTuple):
    push: PendingPush
    # Awaited by the caller alone: cancelling it (a client gone) cancels only this future, and a batch's
    # failure is set only on futures still awaited, so no exception is left unretrieved.
    answer: asyncio.Future[bool]


class PushLog:
    """Records pushes in batches: `record` returns once its push is stored, True when it changed what is
    stored and False when it did not (a retry or a replay, or a verify ticket no newer than the one held),
    and raises what the transaction raised if it failed."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._insert_new = (
            db.insert(_PUSHES)
            .on_conflict_do_nothing(index_elements=list(_KEY))
            .returning(*(_PUSHES.c[name] for name in _KEY))
        )
        tickets = db.insert(_TICKETS)
        new = tickets.excluded
        # Pushes may arrive out of order: an older ticket never replaces a newer one, and a retry of the push
        # that carried the stored ticket changes nothing. Of two pushes in one second, the later wins.
        self._upsert_ticket = tickets.on_conflict_do_update(
            index_elements=["platform_id"],
            set_={name: new[name] for name in _TICKET_VALUES},
            where=or_(
                _TICKETS.c.create_time < new.create_time,
                and_(
                    _TICKETS.c.create_time == new.create_time,
                    or_(
                        _TICKETS.c.msg_signature.is_distinct_from(new.msg_signature),
                        _TICKETS.c.nonce.is_distinct_from(new.nonce),
                    ),
                ),
            ),
        ).returning(_TICKETS.c.platform_id)
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

    async def drain(self) -> None:
        """Wait until the pushes queued so far are written and their callers answered (before the store
        closes)."""
        writer = self._writer
        if writer is not None and not writer.done() and writer.get_loop() is asyncio.get_running_loop():
            await asyncio.wait([writer])

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
        """Write ``batch`` in one transaction; the callers whose pushes changed what is stored."""
        pushes = [waiting.push for waiting in batch]
        changed = await self._db.write(lambda conn: self._insert(conn, pushes))
        return [batch[i] for i in changed]

    def _insert(self, conn: Connection, pushes: list[PendingPush]) -> list[int]:
        """Store what ``pushes`` change; the positions in ``pushes`` of those that changed something: the
        authorization events not seen before, and the ticket that replaced its platform's stored one (of
        a push there twice, only the first counts: a later copy changes nothing)."""
        events = [i for i, push in enumerate(pushes) if push.ticket is None]
        changed = []
        if events:
            # Rows in key order, tickets in platform order: two replicas' batches on PostgreSQL then take
            # their locks in one order and cannot deadlock on each other. An executemany with RETURNING:
            # SQLAlchemy sends it as multi-row INSERTs ("insertmanyvalues") from one statement compiled
            # once, where .values([...]) compiles anew for each batch size.
            rows = sorted((pushes[i].row for i in events), key=_key)
            stored = {tuple(row) for row in conn.execute(self._insert_new, rows)}
            for i in events:
                key = _key(pushes[i].row)
                if key in stored:
                    stored.remove(key)
                    changed.append(i)
        newest: dict[str, tuple[int, str]] = {}  # platform -> its newest ticket, and that push's position
        seen: set[tuple[Any, ...]] = set()
        for i, push in enumerate(pushes):
            key = _key(push.row)
            if push.ticket is None or key in seen:
                continue
            seen.add(key)
            held = newest.get(push.row["platform_id"])
            if held is None or push.row["create_time"] >= pushes[held[0]].row["create_time"]:
                newest[push.row["platform_id"]] = (i, push.ticket)
        if newest:
            ordered = [newest[platform] for platform in sorted(newest)]
            values = [self._sealed_ticket(pushes[i].row, ticket) for i, ticket in ordered]
            changed += [newest[platform][0] for (platform,) in conn.execute(self._upsert_ticket, values)]
        return sorted(changed)

    def _sealed_ticket(self, row: dict[str, Any], ticket: str) -> dict[str, Any]:
        """The ``component_tickets`` values of the verify ticket ``ticket``, pushed as ``row``."""
        platform_id = row["platform_id"]
        return {
            **{name: row[name] for name in _TICKET_VALUES if name != "ticket_sealed"},
            "platform_id": platform_id,
            "ticket_sealed": self._db.box.seal(ticket, context=f"ticket:{platform_id}"),
        }


def _settle(batch: list[_Waiting], winners: list[_Waiting]) -> None:
    """Answer each caller: True when its push changed what is stored, False when it did not."""
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

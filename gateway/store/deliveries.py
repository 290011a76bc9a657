"""Inbound messages and their deliveries: recorded once, claimed by one replica at a time, fenced.

A message and its deliveries are written in one transaction before WeChat is answered; the unique
(authorizer, dedup key) pair turns WeChat's retries into a no-op. Replicas share the due deliveries by
claiming them under a lease (PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so claims never wait on each other;
SQLite serves one process). Every outcome is written only by the lease's holder.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Literal, get_args
from urllib.parse import urlsplit

import msgspec
from sqlalchemy import Select, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from gateway.store.database import Database
from gateway.store.tables import Delivery, InboundMessage

__all__ = [
    "DELIVERY_STATUSES",
    "DeliveryRecord",
    "DeliveryStatus",
    "DeliveryStore",
    "DueDelivery",
    "NewDelivery",
    "NewMessage",
    "is_record_id",
    "new_record_id",
]

DeliveryStatus = Literal["pending", "delivered", "failed"]
DELIVERY_STATUSES: tuple[DeliveryStatus, ...] = get_args(DeliveryStatus)
_RECORD_ID = re.compile(r"[0-9a-f]{24}")


def new_record_id(now: float) -> str:
    """A message or delivery id: milliseconds then randomness, so ids sort by creation time."""
    return f"{int(now * 1000):012x}{secrets.token_hex(6)}"


def is_record_id(value: str) -> bool:
    """Whether ``value`` is shaped like an id from :func:`new_record_id`."""
    return _RECORD_ID.fullmatch(value) is not None


class NewMessage(msgspec.Struct, frozen=True):
    """A verified inbound message; ``message`` is its elements as JSON (the ``message`` member of
    every delivery's body)."""

    id: str
    platform_id: str
    authorizer_appid: str
    dedup_key: str
    msg_type: str
    event: str | None
    received_at: float
    disposition: str
    message: bytes


class NewDelivery(msgspec.Struct, frozen=True):
    """A delivery to create with its message; ``leased`` when the caller attempts it at once."""

    id: str
    client_id: str
    url: str
    reply: bool = False


class DueDelivery(msgspec.Struct, frozen=True):
    """A delivery claimed for an attempt, with what its body is made of."""

    id: str
    message_id: str
    client_id: str
    url: str
    reply: bool
    attempts: int  # before this one
    give_up_at: float
    platform_id: str
    authorizer_appid: str
    received_at: float
    message: bytes


class DeliveryRecord(msgspec.Struct, frozen=True):
    """A delivery as listed to administrators: where it goes and how it went, never the message."""

    id: str
    message_id: str
    platform: str
    authorizer_appid: str
    msg_type: str
    event: str | None
    client: str
    url: str  # without its query, which may carry a credential
    reply: bool
    status: str
    attempts: int
    created_at: float
    next_attempt_at: float | None
    delivered_at: float | None
    last_status: int | None
    last_error: str | None


def _context(message_id: str) -> str:
    return f"message:{message_id}"


class DeliveryStore:
    """Record inbound messages, claim due deliveries, write outcomes, list and replay."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(
        self,
        message: NewMessage,
        deliveries: Sequence[NewDelivery],
        *,
        give_up_at: float,
        lease: tuple[str, float] | None = None,
    ) -> bool:
        """Store ``message`` with its deliveries, due now; False when it was stored before (a retry).

        ``lease`` (owner, until) is taken on the reply delivery, which the caller attempts itself.
        """
        row = {
            "id": message.id,
            "platform_id": message.platform_id,
            "authorizer_appid": message.authorizer_appid,
            "dedup_key": message.dedup_key,
            "msg_type": message.msg_type,
            "event": message.event,
            "received_at": message.received_at,
            "disposition": message.disposition,
            "body_sealed": self._db.box.seal(message.message.decode(), context=_context(message.id)),
        }
        try:
            async with self._db.sessions.begin() as session:
                await session.execute(insert(InboundMessage).values(row))
                if deliveries:
                    await session.execute(
                        insert(Delivery),
                        [
                            {
                                "id": d.id,
                                "message_id": message.id,
                                "client_id": d.client_id,
                                "url": d.url,
                                "reply": d.reply,
                                "status": "pending",
                                "attempts": 0,
                                "created_at": message.received_at,
                                "next_attempt_at": message.received_at,
                                "give_up_at": give_up_at,
                                "lease_owner": lease[0] if lease and d.reply else None,
                                "lease_until": lease[1] if lease and d.reply else None,
                            }
                            for d in deliveries
                        ],
                    )
        except IntegrityError:
            if await self._seen(message.authorizer_appid, message.dedup_key):
                return False
            raise
        return True

    async def _seen(self, authorizer_appid: str, dedup_key: str) -> bool:
        async with self._db.sessions() as session:
            found = await session.scalar(
                select(col(InboundMessage.id)).where(
                    col(InboundMessage.authorizer_appid) == authorizer_appid,
                    col(InboundMessage.dedup_key) == dedup_key,
                )
            )
        return found is not None

    async def claim(
        self, owner: str, lease_s: float, room: Mapping[tuple[str, str], int], default_room: int, limit: int
    ) -> list[DueDelivery]:
        """Lease up to ``limit`` due deliveries, oldest first, at most ``room`` per (client, url)
        (``default_room`` for one not named)."""
        now = self._db.clock()
        due = (
            select(
                Delivery,
                col(InboundMessage.platform_id),
                col(InboundMessage.authorizer_appid),
                col(InboundMessage.received_at),
                col(InboundMessage.body_sealed),
            )
            .join(InboundMessage, col(InboundMessage.id) == col(Delivery.message_id))
            .where(
                col(Delivery.status) == "pending",
                col(Delivery.next_attempt_at) <= now,
                or_(col(Delivery.lease_until).is_(None), col(Delivery.lease_until) < now),
            )
            .order_by(col(Delivery.next_attempt_at))
            .limit(limit * 4)  # some may belong to subscribers without room
            .with_for_update(skip_locked=True, of=Delivery)
        )
        left = dict(room)
        claimed: list[DueDelivery] = []
        async with self._db.sessions.begin() as session:
            for delivery, platform_id, appid, received_at, sealed in (await session.execute(due)).all():
                destination = (delivery.client_id, delivery.url)
                if len(claimed) >= limit or left.get(destination, default_room) <= 0:
                    continue
                left[destination] = left.get(destination, default_room) - 1
                claimed.append(
                    DueDelivery(
                        id=delivery.id,
                        message_id=delivery.message_id,
                        client_id=delivery.client_id,
                        url=delivery.url,
                        reply=delivery.reply,
                        attempts=delivery.attempts,
                        give_up_at=delivery.give_up_at,
                        platform_id=platform_id,
                        authorizer_appid=appid,
                        received_at=received_at,
                        message=self._db.box.open(sealed, context=_context(delivery.message_id)).encode(),
                    )
                )
            if claimed:
                await session.execute(
                    update(Delivery)
                    .where(col(Delivery.id).in_([d.id for d in claimed]))
                    .values(lease_owner=owner, lease_until=now + lease_s)
                )
        return claimed

    async def delivered(self, delivery_id: str, owner: str, status: int) -> bool:
        """Mark a leased delivery delivered; False when the lease was lost."""
        now = self._db.clock()
        return await self._settle(
            delivery_id,
            owner,
            status="delivered",
            delivered_at=now,
            last_status=status,
            last_error=None,
        )

    async def retry_at(self, delivery_id: str, owner: str, at: float, status: int | None, error: str) -> bool:
        """A failed attempt: try again at ``at``; False when the lease was lost."""
        return await self._settle(
            delivery_id, owner, next_attempt_at=at, last_status=status, last_error=error[:200]
        )

    async def dead_letter(self, delivery_id: str, owner: str, status: int | None, error: str) -> bool:
        """A failed attempt after which no other is made; False when the lease was lost."""
        return await self._settle(
            delivery_id, owner, status="failed", last_status=status, last_error=error[:200]
        )

    async def _settle(self, delivery_id: str, owner: str, **values: object) -> bool:
        async with self._db.sessions.begin() as session:
            result = await session.execute(
                update(Delivery)
                .where(col(Delivery.id) == delivery_id, col(Delivery.lease_owner) == owner)
                .values(attempts=col(Delivery.attempts) + 1, lease_owner=None, lease_until=None, **values)
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def page(
        self, *, status: str | None, client_id: str | None, before: str | None, limit: int
    ) -> tuple[list[DeliveryRecord], bool]:
        """Deliveries newest first, after the id ``before``; and whether there are more."""
        query = self._records().order_by(col(Delivery.id).desc()).limit(limit + 1)
        if status is not None:
            query = query.where(col(Delivery.status) == status)
        if client_id is not None:
            query = query.where(col(Delivery.client_id) == client_id)
        if before is not None:
            query = query.where(col(Delivery.id) < before)
        async with self._db.sessions() as session:
            rows = (await session.execute(query)).all()
        return [_record(*row) for row in rows[:limit]], len(rows) > limit

    async def get(self, delivery_id: str) -> DeliveryRecord | None:
        """One delivery, or None."""
        async with self._db.sessions() as session:
            row = (await session.execute(self._records().where(col(Delivery.id) == delivery_id))).first()
        return None if row is None else _record(*row)

    async def replay(self, delivery_id: str, give_up_at: float) -> DeliveryRecord | None:
        """Make a delivery due now, whatever its state, with a new deadline; None when unknown.

        An attempt in flight keeps its lease and finishes; its outcome is then written as usual.
        """
        now = self._db.clock()
        async with self._db.sessions.begin() as session:
            result = await session.execute(
                update(Delivery)
                .where(col(Delivery.id) == delivery_id)
                .values(status="pending", next_attempt_at=now, give_up_at=give_up_at, delivered_at=None)
            )
        if not result.rowcount:  # type: ignore[attr-defined]
            return None
        return await self.get(delivery_id)

    async def purge(self, older_than: float, chunk: int = 1_000) -> int:
        """Delete the messages received before ``older_than`` whose deliveries are all settled (delivered
        or failed), with those deliveries, ``chunk`` messages per transaction; how many messages went.
        A message with a delivery still pending stays, however old."""
        pending = select(col(Delivery.id)).where(
            col(Delivery.message_id) == col(InboundMessage.id), col(Delivery.status) == "pending"
        )
        oldest = (
            select(col(InboundMessage.id))
            .where(col(InboundMessage.received_at) < older_than, ~pending.exists())
            .order_by(col(InboundMessage.id))
            .limit(chunk)
        )
        removed = 0
        while True:
            async with self._db.engine.begin() as conn:
                ids = list((await conn.execute(oldest)).scalars())
                if ids:
                    await conn.execute(delete(Delivery).where(col(Delivery.message_id).in_(ids)))
                    await conn.execute(delete(InboundMessage).where(col(InboundMessage.id).in_(ids)))
            removed += len(ids)
            if len(ids) < chunk:
                return removed

    async def counts(self) -> dict[str, int]:
        """How many deliveries are in each status (for metrics and health)."""
        query = select(col(Delivery.status), func.count()).group_by(col(Delivery.status))
        async with self._db.sessions() as session:
            rows = (await session.execute(query)).all()
        return {status: 0 for status in DELIVERY_STATUSES} | {s: int(n) for s, n in rows}

    @staticmethod
    def _records() -> Select[Delivery, str, str, str, str | None]:
        return select(
            Delivery,
            col(InboundMessage.platform_id),
            col(InboundMessage.authorizer_appid),
            col(InboundMessage.msg_type),
            col(InboundMessage.event),
        ).join(InboundMessage, col(InboundMessage.id) == col(Delivery.message_id))


def _record(
    row: Delivery, platform_id: str, authorizer_appid: str, msg_type: str, event: str | None
) -> DeliveryRecord:
    return DeliveryRecord(
        id=row.id,
        message_id=row.message_id,
        platform=platform_id,
        authorizer_appid=authorizer_appid,
        msg_type=msg_type,
        event=event,
        client=row.client_id,
        url=urlsplit(row.url)._replace(query="").geturl(),
        reply=row.reply,
        status=row.status,
        attempts=row.attempts,
        created_at=row.created_at,
        next_attempt_at=row.next_attempt_at if row.status == "pending" else None,
        delivered_at=row.delivered_at,
        last_status=row.last_status,
        last_error=row.last_error,
    )

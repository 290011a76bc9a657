"""The state store: what the gateway keeps between requests, behind one small interface.

Secrets go in sealed (AES-GCM, bound to their row's identity) and come out opened; callers never see
the sealed form. The same statements run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec
from sqlalchemy import select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlmodel import col

from gateway.crypto import SecretBox
from gateway.events import (
    Authorized,
    ComponentEvent,
    ComponentVerifyTicket,
    FastRegister,
    Unauthorized,
    UpdateAuthorized,
    info_type,
)
from gateway.store.tables import ComponentPush, ComponentTicket

__all__ = ["RecordedEvent", "Store", "StoredTicket"]

_AUTHORIZATION_EVENTS = (Authorized, UpdateAuthorized, Unauthorized, FastRegister)
_event_decoder = msgspec.json.Decoder(ComponentEvent)


class StoredTicket(msgspec.Struct, frozen=True):
    """A platform's newest component_verify_ticket, opened."""

    ticket: str
    create_time: int
    received_at: float


class RecordedEvent(msgspec.Struct, frozen=True):
    """An authorization event waiting for the onboarding service."""

    id: int
    platform_id: str
    received_at: float
    event: ComponentEvent


class Store:
    """Tickets, pushes and (in later layers) tokens, on one async engine."""

    def __init__(
        self, engine: AsyncEngine, box: SecretBox, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._engine = engine
        self._box = box
        self._clock = clock
        self._sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)

    @property
    def engine(self) -> AsyncEngine:
        """The engine the store runs on."""
        return self._engine

    async def ping(self) -> None:
        """Raise unless the database answers."""
        async with self._engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def record_push(
        self, platform_id: str, msg_signature: str, nonce: str, event: ComponentEvent
    ) -> bool:
        """Record an authenticated push and apply what it carries, in one transaction.

        Returns False, changing nothing, when the same (signature, nonce) was recorded before: WeChat
        retried. A verify ticket replaces the stored one unless the stored one is newer.
        """
        now = self._clock()
        authorizer = getattr(event, "authorizer_appid", None) or getattr(event, "appid", None)
        payload = None
        if isinstance(event, _AUTHORIZATION_EVENTS):
            payload = self._box.seal(msgspec.json.encode(event).decode(), context=f"push:{platform_id}")
        async with self._sessions.begin() as session:
            insert = self._insert(ComponentPush).values(
                platform_id=platform_id,
                msg_signature=msg_signature,
                nonce=nonce,
                info_type=info_type(event),
                authorizer_appid=authorizer,
                create_time=event.create_time,
                received_at=now,
                payload_sealed=payload,
            )
            inserted = await session.execute(
                insert.on_conflict_do_nothing(
                    index_elements=["platform_id", "msg_signature", "nonce"]
                ).returning(col(ComponentPush.id))
            )
            if inserted.scalar_one_or_none() is None:
                return False
            if isinstance(event, ComponentVerifyTicket):
                await session.execute(self._ticket_upsert(platform_id, event, now))
        return True

    def _ticket_upsert(self, platform_id: str, event: ComponentVerifyTicket, now: float) -> Any:
        values = {
            "ticket_sealed": self._box.seal(event.ticket, context=f"ticket:{platform_id}"),
            "create_time": event.create_time,
            "received_at": now,
        }
        insert = self._insert(ComponentTicket).values(platform_id=platform_id, **values)
        # Pushes may arrive out of order: an older ticket never replaces a newer one.
        return insert.on_conflict_do_update(
            index_elements=["platform_id"],
            set_=values,
            where=col(ComponentTicket.create_time) <= insert.excluded.create_time,
        )

    def _insert(self, table: type[Any]) -> postgresql.Insert | sqlite.Insert:
        # ON CONFLICT is spelled alike on both, but SQLAlchemy builds it per dialect
        if self._engine.dialect.name == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    async def ticket(self, platform_id: str) -> StoredTicket | None:
        """The newest verify ticket of ``platform_id``, or None before the first push."""
        async with self._sessions() as session:
            row = await session.get(ComponentTicket, platform_id)
        if row is None:
            return None
        ticket = self._box.open(row.ticket_sealed, context=f"ticket:{platform_id}")
        return StoredTicket(ticket=ticket, create_time=row.create_time, received_at=row.received_at)

    async def ticket_receipts(self) -> dict[str, float]:
        """When each platform's stored ticket arrived, by platform id (no secrets opened)."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(col(ComponentTicket.platform_id), col(ComponentTicket.received_at))
            )
            return {platform_id: received_at for platform_id, received_at in rows}

    async def pending_authorization_events(self, platform_id: str | None = None) -> list[RecordedEvent]:
        """Authorization events not yet acted upon, oldest first."""
        query = (
            select(ComponentPush)
            .where(col(ComponentPush.processed_at).is_(None), col(ComponentPush.payload_sealed).is_not(None))
            .order_by(col(ComponentPush.received_at), col(ComponentPush.id))
        )
        if platform_id is not None:
            query = query.where(col(ComponentPush.platform_id) == platform_id)
        async with self._sessions() as session:
            rows = (await session.scalars(query)).all()
        return [
            RecordedEvent(
                id=row.id or 0,
                platform_id=row.platform_id,
                received_at=row.received_at,
                event=_event_decoder.decode(
                    self._box.open(row.payload_sealed or "", context=f"push:{row.platform_id}")
                ),
            )
            for row in rows
        ]

    async def mark_processed(self, event_id: int) -> None:
        """Record that an authorization event has been acted upon."""
        async with self._sessions.begin() as session:
            row = await session.get(ComponentPush, event_id)
            if row is not None:
                row.processed_at = self._clock()
                session.add(row)

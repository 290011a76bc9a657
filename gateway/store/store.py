"""The state store: what the gateway keeps between requests, behind one small interface.

Secrets go in sealed (AES-GCM, bound to their row's identity) and come out opened; callers never see
the sealed form. The same statements run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec
from sqlalchemy import delete, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from gateway.crypto import SecretBox
from gateway.store.audit import AuditLog
from gateway.store.authorizations import AuthorizationStore
from gateway.store.catalog import CatalogQuery
from gateway.store.credentials import CredentialStore
from gateway.store.database import Database
from gateway.store.deliveries import DeliveryStore
from gateway.store.gateway_tokens import GatewayTokenStore
from gateway.store.open_accounts import OpenAccountStore
from gateway.store.push_log import PendingPush, PushLog
from gateway.store.tables import ComponentPush, ComponentTicket
from gateway.store.web_sessions import WebSessionStore
from gateway.xml import (
    ComponentEvent,
    ComponentVerifyTicket,
    info_type,
    is_authorization_event,
)

__all__ = ["RecordedEvent", "Store", "StoredTicket"]

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
    attempts: int = 0


class Store:
    """Everything the gateway keeps, on one async engine: pushes and tickets here, and the
    ``credentials``, ``authorizations``, ``gateway_tokens``, ``audit``, ``catalog``, ``web_sessions``,
    ``deliveries`` and ``open_accounts`` parts beside them."""

    def __init__(
        self, engine: AsyncEngine, box: SecretBox, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = Database(engine, box, clock)
        self._engine = engine
        self._box = box
        self._clock = clock
        self._sessions = self._db.sessions
        self.credentials = CredentialStore(self._db)
        self.authorizations = AuthorizationStore(self._db)
        self.audit = AuditLog(self._db)
        self.gateway_tokens = GatewayTokenStore(self._db)
        self.catalog = CatalogQuery(self._db)
        self.web_sessions = WebSessionStore(self._db)
        self.deliveries = DeliveryStore(self._db)
        self.open_accounts = OpenAccountStore(self._db)
        self._pushes = PushLog(self._db)

    @property
    def engine(self) -> AsyncEngine:
        """The engine the store runs on."""
        return self._engine

    async def aclose(self) -> None:
        """Close the store's connections and dispose of its engine."""
        await self._pushes.drain()
        await self._db.close()
        await self._engine.dispose()

    async def ping(self) -> None:
        """Raise unless the database answers."""
        async with self._engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def record_push(
        self, platform_id: str, msg_signature: str, nonce: str, event: ComponentEvent
    ) -> bool:
        """Record an authenticated push and apply what it carries, in one transaction (shared with the
        pushes that arrive meanwhile: `PushLog`).

        Returns whether the push changed what is stored. An authorization event is recorded unless the
        same (signature, nonce) was recorded before: WeChat retried. A verify ticket replaces the stored
        one unless that one is newer or came from this very push (a retry); it leaves no other record.
        """
        now = self._clock()
        authorizer = getattr(event, "authorizer_appid", None) or getattr(event, "appid", None)
        payload = None
        if is_authorization_event(event):
            payload = self._box.seal(msgspec.json.encode(event).decode(), context=f"push:{platform_id}")
        row = {
            "platform_id": platform_id,
            "msg_signature": msg_signature,
            "nonce": nonce,
            "info_type": info_type(event),
            "authorizer_appid": authorizer,
            "create_time": event.create_time,
            "received_at": now,
            "payload_sealed": payload,
        }
        ticket = event.ticket if isinstance(event, ComponentVerifyTicket) else None
        return await self._pushes.record(PendingPush(row, ticket))

    async def purge_pushes(self, older_than: float, chunk: int = 5_000) -> int:
        """Delete the pushes received before ``older_than`` that nothing waits on (authorization events
        already acted on, events without a payload, and the verify tickets' pushes logged before
        migration 0009), ``chunk`` per transaction; how many went. Their replay
        guard is no longer needed: a push that old is refused by its timestamp."""
        settled = or_(
            col(ComponentPush.payload_sealed).is_(None), col(ComponentPush.processed_at).is_not(None)
        )
        oldest = (
            select(col(ComponentPush.id))
            .where(col(ComponentPush.received_at) < older_than, settled)
            .order_by(col(ComponentPush.id))
            .limit(chunk)
        )
        return await self._db.delete_in_chunks(
            delete(ComponentPush).where(col(ComponentPush.id).in_(oldest)), chunk
        )

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
        """Authorization events not yet acted upon, oldest first (claimed or not)."""
        query = self._pending().order_by(col(ComponentPush.received_at), col(ComponentPush.id))
        if platform_id is not None:
            query = query.where(col(ComponentPush.platform_id) == platform_id)
        async with self._sessions() as session:
            rows = (await session.scalars(query)).all()
        return [self._recorded(row) for row in rows]

    def _pending(self) -> Any:
        return select(ComponentPush).where(
            col(ComponentPush.processed_at).is_(None), col(ComponentPush.payload_sealed).is_not(None)
        )

    def _recorded(self, row: ComponentPush) -> RecordedEvent:
        payload = self._box.open(row.payload_sealed or "", context=f"push:{row.platform_id}")
        return RecordedEvent(
            id=row.id or 0,
            platform_id=row.platform_id,
            received_at=row.received_at,
            event=_event_decoder.decode(payload),
            attempts=row.attempts,
        )

    async def claim_authorization_events(self, lease_s: float, limit: int = 20) -> list[RecordedEvent]:
        """Claim pending events nobody else holds, oldest first, for ``lease_s`` seconds each.

        A replica that dies holding a claim lets it lapse; another then picks the event up.
        """
        now = self._clock()
        free = or_(col(ComponentPush.claimed_until).is_(None), col(ComponentPush.claimed_until) < now)
        async with self._sessions() as session:
            candidates = (
                await session.scalars(
                    self._pending().where(free).order_by(col(ComponentPush.id)).limit(limit)
                )
            ).all()
        claimed = []
        for row in candidates:
            async with self._sessions.begin() as session:
                taken = await session.execute(
                    update(ComponentPush)
                    .where(col(ComponentPush.id) == row.id, col(ComponentPush.processed_at).is_(None), free)
                    .values(claimed_until=now + lease_s, attempts=col(ComponentPush.attempts) + 1)
                )
            if taken.rowcount:  # type: ignore[attr-defined]
                claimed.append(self._recorded(row))
        return claimed

    async def defer_event(self, event_id: int, retry_at: float, outcome: str) -> None:
        """Leave an event pending, to be tried again from ``retry_at``."""
        async with self._sessions.begin() as session:
            await session.execute(
                update(ComponentPush)
                .where(col(ComponentPush.id) == event_id)
                .values(claimed_until=retry_at, outcome=outcome[:200])
            )

    async def mark_processed(self, event_id: int, outcome: str = "done") -> None:
        """Record that an authorization event has been acted upon, and how it ended."""
        async with self._sessions.begin() as session:
            await session.execute(
                update(ComponentPush)
                .where(col(ComponentPush.id) == event_id)
                .values(processed_at=self._clock(), claimed_until=None, outcome=outcome[:200])
            )

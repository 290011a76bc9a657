"""Sessions of the auditors' pages, kept in the database so every replica knows them.

Only the sha-256 of a session's token is stored: a copy of the table opens no session.
"""

from __future__ import annotations

import msgspec
from sqlalchemy import delete, insert
from sqlmodel import col

from gateway.store.database import Database
from gateway.store.gateway_tokens import token_digest
from gateway.store.tables import WebSession

__all__ = ["StoredWebSession", "WebSessionStore"]


class StoredWebSession(msgspec.Struct, frozen=True):
    """Who a session belongs to and when it ends."""

    client_id: str
    created_at: float
    expires_at: float


class WebSessionStore:
    """Open, look up and end sessions."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, token: str, client_id: str, lifetime_s: float) -> StoredWebSession:
        """Store a new session for ``client_id`` under ``token``, ending ``lifetime_s`` from now."""
        now = self._db.clock()
        session = StoredWebSession(client_id, now, now + lifetime_s)
        async with self._db.sessions.begin() as db_session:
            await db_session.execute(
                insert(WebSession).values(
                    token_sha256=token_digest(token),
                    client_id=client_id,
                    created_at=session.created_at,
                    expires_at=session.expires_at,
                )
            )
        return session

    async def get(self, token: str) -> StoredWebSession | None:
        """The session of ``token``, expired or not (the caller judges), or None."""
        async with self._db.sessions() as db_session:
            row = await db_session.get(WebSession, token_digest(token))
        return None if row is None else StoredWebSession(row.client_id, row.created_at, row.expires_at)

    async def delete(self, token: str) -> None:
        """End the session of ``token`` (nothing happens when there is none)."""
        async with self._db.sessions.begin() as db_session:
            await db_session.execute(
                delete(WebSession).where(col(WebSession.token_sha256) == token_digest(token))
            )

    async def purge_expired(self, before: float) -> int:
        """Forget sessions that ended before ``before``; returns how many."""
        async with self._db.sessions.begin() as db_session:
            result = await db_session.execute(delete(WebSession).where(col(WebSession.expires_at) < before))
            return int(result.rowcount)  # type: ignore[attr-defined]

"""Sessions of the auditors' pages, kept in the database so every replica knows them: the table under
the Litestar ``Store`` that Litestar's server-side sessions keep their data in (``gateway.http.sessions``).

Only the sha-256 of a session id is stored: a copy of the table opens no session. An expired session is
gone for every reader at once, and its row deleted when read or by `delete_expired`.
"""

from __future__ import annotations

import math

from sqlalchemy import delete, select, update
from sqlmodel import col

from gateway.store.database import Database
from gateway.store.gateway_tokens import token_digest
from gateway.store.tables import WebSession

__all__ = ["WebSessionStore"]


class WebSessionStore:
    """Session data by session id, each with its end."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def set(self, key: str, data: bytes, expires_in_s: float = math.inf) -> None:
        """Store ``data`` under ``key`` (replacing what was there), ending ``expires_in_s`` from now."""
        values = {"data": data, "expires_at": self._db.clock() + expires_in_s}
        upsert = (
            self._db.insert(WebSession)
            .values(token_sha256=token_digest(key), **values)
            .on_conflict_do_update(index_elements=["token_sha256"], set_=values)
        )
        await self._db.write(lambda conn: conn.execute(upsert))

    async def get(self, key: str, renew_for_s: float | None = None) -> bytes | None:
        """The data of a live session, or None (none, or ended: its row is deleted); ``renew_for_s``
        moves its end that far from now."""
        digest = token_digest(key)
        async with self._db.sessions() as session:
            row = (
                await session.execute(
                    select(col(WebSession.data), col(WebSession.expires_at)).where(
                        col(WebSession.token_sha256) == digest
                    )
                )
            ).first()
        if row is None:
            return None
        now = self._db.clock()
        if row.expires_at <= now:
            await self.delete(key)
            return None
        if renew_for_s is not None:
            async with self._db.sessions.begin() as session:
                await session.execute(
                    update(WebSession)
                    .where(col(WebSession.token_sha256) == digest)
                    .values(expires_at=now + renew_for_s)
                )
        return bytes(row.data)

    async def delete(self, key: str) -> None:
        """End the session of ``key`` (nothing happens when there is none)."""
        digest = token_digest(key)
        async with self._db.sessions.begin() as session:
            await session.execute(delete(WebSession).where(col(WebSession.token_sha256) == digest))

    async def delete_all(self) -> None:
        """End every session."""
        async with self._db.sessions.begin() as session:
            await session.execute(delete(WebSession))

    async def expires_in(self, key: str) -> int | None:
        """Whole seconds until the session of ``key`` ends; None without a live one."""
        async with self._db.sessions() as session:
            expires_at = (
                await session.execute(
                    select(col(WebSession.expires_at)).where(
                        col(WebSession.token_sha256) == token_digest(key)
                    )
                )
            ).scalar_one_or_none()
        left = None if expires_at is None else expires_at - self._db.clock()
        return None if left is None or left <= 0 else int(left) if math.isfinite(left) else None

    async def delete_expired(self) -> int:
        """Forget the sessions that have ended; returns how many."""
        now = self._db.clock()
        async with self._db.sessions.begin() as session:
            result = await session.execute(delete(WebSession).where(col(WebSession.expires_at) <= now))
            return int(result.rowcount)  # type: ignore[attr-defined]

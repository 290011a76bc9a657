"""Open accounts the gateway made with open/create, remembered so that their 5-account cap is counted."""

from __future__ import annotations

import msgspec
from sqlalchemy import select, update
from sqlmodel import col

from gateway.store.database import Database
from gateway.store.tables import OpenAccountRow

__all__ = ["CreatedOpenAccountRecord", "OpenAccountStore"]


class CreatedOpenAccountRecord(msgspec.Struct, frozen=True):
    """One open account the gateway created: its principal (copied from ``created_from``)."""

    open_appid: str
    principal_name: str
    created_from: str
    created_at: float
    verified: bool


class OpenAccountStore:
    """The ``open_accounts`` rows."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def remember(self, open_appid: str, principal_name: str, created_from: str) -> None:
        """Record an open account open/create just made (unverified); a second record changes nothing."""
        insert = self._db.insert(OpenAccountRow).values(
            open_appid=open_appid,
            principal_name=principal_name,
            created_from=created_from,
            created_at=self._db.clock(),
            verified=False,
        )
        async with self._db.sessions.begin() as session:
            await session.execute(insert.on_conflict_do_nothing())

    async def mark_verified(self, open_appid: str) -> bool:
        """Record that WeChat verified it (its cap no longer applies); False if the gateway did not
        make it."""
        async with self._db.sessions.begin() as session:
            result = await session.execute(
                update(OpenAccountRow)
                .where(col(OpenAccountRow.open_appid) == open_appid)
                .values(verified=True)
            )
        return bool(getattr(result, "rowcount", 0))

    async def all(self) -> list[CreatedOpenAccountRecord]:
        """Every open account the gateway created, oldest first."""
        async with self._db.sessions() as session:
            rows = await session.scalars(select(OpenAccountRow).order_by(col(OpenAccountRow.created_at)))
            return [
                CreatedOpenAccountRecord(
                    r.open_appid, r.principal_name, r.created_from, r.created_at, r.verified
                )
                for r in rows
            ]

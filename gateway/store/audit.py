"""The audit log: who was handed what, which links were made, which bindings changed. Never secrets."""

from __future__ import annotations

import msgspec
from sqlalchemy import delete, select
from sqlmodel import col

from gateway.store.database import Database
from gateway.store.tables import AuditEntry

__all__ = ["AuditLog", "AuditRecord"]


class AuditRecord(msgspec.Struct, frozen=True):
    """One line of the audit log."""

    at: float
    actor: str
    action: str
    platform_id: str | None = None
    authorizer_appid: str | None = None
    detail: str | None = None


class AuditLog:
    """Append and read audit records."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def append(self, records: list[AuditRecord]) -> None:
        """Write records with one driver-level executemany of tuples.

        Thousands of rows a second pass here (one per token handed out); building ORM or Core parameter
        dicts for each cost more event-loop time than serving the requests they record.
        """
        if not records:
            return
        rows = [(r.at, r.actor, r.action, r.platform_id, r.authorizer_appid, r.detail) for r in records]
        async with self._db.engine.begin() as conn:
            await conn.exec_driver_sql(self._insert_sql(conn.dialect.paramstyle), rows)

    async def purge(self, older_than: float, chunk: int = 5_000) -> int:
        """Delete the records from before ``older_than``, ``chunk`` rows per transaction (so replicas'
        flushes never wait long behind it); how many went."""
        oldest = (
            select(col(AuditEntry.id)).where(col(AuditEntry.at) < older_than).order_by(col(AuditEntry.id))
        )
        purge = delete(AuditEntry).where(col(AuditEntry.id).in_(oldest.limit(chunk)))
        return await self._db.delete_in_chunks(purge, chunk)

    @staticmethod
    def _insert_sql(paramstyle: str | None) -> str:
        marks = [f"${i}" for i in range(1, 7)] if paramstyle == "numeric_dollar" else ["?"] * 6
        columns = "INSERT INTO audit_log (at, actor, action, platform_id, authorizer_appid, detail) VALUES "
        return columns + "(" + ", ".join(marks) + ")"  # placeholders only: values go as parameters

    async def recent(self, limit: int = 100, authorizer_appid: str | None = None) -> list[AuditRecord]:
        """The newest records first."""
        query = select(AuditEntry).order_by(col(AuditEntry.id).desc()).limit(limit)
        if authorizer_appid is not None:
            query = query.where(col(AuditEntry.authorizer_appid) == authorizer_appid)
        async with self._db.sessions() as session:
            return [
                AuditRecord(r.at, r.actor, r.action, r.platform_id, r.authorizer_appid, r.detail)
                for r in await session.scalars(query)
            ]

    async def page(
        self,
        *,
        before_id: int | None,
        limit: int,
        actor: str | None = None,
        action: str | None = None,
        authorizer_appid: str | None = None,
        platform_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> tuple[list[tuple[int, AuditRecord]], bool]:
        """Newest first, below ``before_id``: up to ``limit`` (id, record) pairs, and whether more follow."""
        query = select(AuditEntry).order_by(col(AuditEntry.id).desc()).limit(limit + 1)
        if before_id is not None:
            query = query.where(col(AuditEntry.id) < before_id)
        for column, value in (
            (AuditEntry.actor, actor),
            (AuditEntry.action, action),
            (AuditEntry.authorizer_appid, authorizer_appid),
            (AuditEntry.platform_id, platform_id),
        ):
            if value is not None:
                query = query.where(col(column) == value)
        if since is not None:
            query = query.where(col(AuditEntry.at) >= since)
        if until is not None:
            query = query.where(col(AuditEntry.at) < until)
        async with self._db.sessions() as session:
            rows = list(await session.scalars(query))
        pairs = [
            (r.id or 0, AuditRecord(r.at, r.actor, r.action, r.platform_id, r.authorizer_appid, r.detail))
            for r in rows[:limit]
        ]
        return pairs, len(rows) > limit

"""The catalog's queries: one row per authorizer across every platform, filtered, in keyset pages.

A row's status is derived from its authorizations (active if any is; else needing re-authorization if any
is; else revoked); its name, kind and binding come from the profile the last sync or authorization saved.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from sqlalchemy import Select, and_, case, exists, func, or_, select

from gateway.store.database import Database
from gateway.store.tables import Authorization, AuthorizerProfileRow, Credential

__all__ = ["CatalogFilter", "CatalogQuery", "StoredCounts", "StoredGrant", "StoredRow"]

_A = Authorization.__table__  # type: ignore[attr-defined]
_P = AuthorizerProfileRow.__table__  # type: ignore[attr-defined]
_C = Credential.__table__  # type: ignore[attr-defined]


class CatalogFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Validated filters (None: no filter)."""

    platform: str | None = None
    kind: str | None = None
    status: str | None = None
    binding: str | None = None
    q: str | None = None


class StoredGrant(msgspec.Struct, frozen=True):
    """One platform's authorization as the catalog shows it."""

    platform_id: str
    func_ids: list[int]
    authorized_at: float
    status: str
    revoked_at: float | None
    token_expires_at: float | None
    token_problem: str | None
    token_blocked_until: float | None


class StoredRow(msgspec.Struct, frozen=True):
    """One authorizer, everything the catalog knows."""

    authorizer_appid: str
    status: str
    kind: str | None
    nick_name: str | None
    principal_name: str | None
    verify_type: int | None
    binding: str
    open_appid: str | None
    synced_at: float | None
    grants: list[StoredGrant]


class StoredCounts(msgspec.Struct, frozen=True, kw_only=True):
    """Authorizers by binding state and by platform (only the values that occur)."""

    by_binding: dict[str, int]
    by_platform: dict[str, int]


def _status() -> Any:
    def count(state: str) -> Any:
        return func.sum(case((_A.c.status == state, 1), else_=0))

    return case(
        (count("active") > 0, "active"),
        (count("reauthorization_required") > 0, "reauthorization_required"),
        else_="revoked",
    )


class CatalogQuery:
    """Reads the catalog in pages ordered by authorizer appid (stable, keyset)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def _filtered(self, where: CatalogFilter) -> Select[Any]:
        per_authorizer = (
            select(_A.c.authorizer_appid.label("appid"), _status().label("status"))
            .group_by(_A.c.authorizer_appid)
            .subquery("per_authorizer")
        )
        binding = func.coalesce(_P.c.binding, "unknown")
        query = select(
            per_authorizer.c.appid,
            per_authorizer.c.status,
            _P.c.kind,
            _P.c.nick_name,
            _P.c.principal_name,
            _P.c.verify_type,
            binding.label("binding"),
            _P.c.open_appid,
            _P.c.synced_at,
        ).select_from(per_authorizer.outerjoin(_P, _P.c.authorizer_appid == per_authorizer.c.appid))
        conditions: list[Any] = []
        if where.platform is not None:
            conditions.append(
                exists().where(
                    and_(_A.c.authorizer_appid == per_authorizer.c.appid, _A.c.platform_id == where.platform)
                )
            )
        if where.kind is not None:
            conditions.append(_P.c.kind == where.kind)
        if where.status is not None:
            conditions.append(per_authorizer.c.status == where.status)
        if where.binding is not None:
            conditions.append(binding == where.binding)
        if where.q:
            needle = where.q.lower()
            conditions.append(
                or_(
                    func.lower(per_authorizer.c.appid).contains(needle, autoescape=True),
                    func.lower(func.coalesce(_P.c.nick_name, "")).contains(needle, autoescape=True),
                    func.lower(func.coalesce(_P.c.principal_name, "")).contains(needle, autoescape=True),
                )
            )
        return query.where(*conditions) if conditions else query

    async def page(self, where: CatalogFilter, after: str | None, limit: int) -> tuple[list[StoredRow], bool]:
        """Up to ``limit`` rows after the appid ``after``; and whether more follow."""
        subquery = self._filtered(where).subquery("catalog")
        paged = select(subquery)
        if after is not None:
            paged = paged.where(subquery.c.appid > after)
        paged = paged.order_by(subquery.c.appid).limit(limit + 1)
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(paged)).all()
            more = len(rows) > limit
            stored = await self._stored(conn, rows[:limit])
        return stored, more

    async def one(self, appid: str) -> StoredRow | None:
        """The row of one authorizer, or None when no platform ever held its authorization."""
        subquery = self._filtered(CatalogFilter()).subquery("catalog")
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(select(subquery).where(subquery.c.appid == appid))).all()
            stored = await self._stored(conn, rows)
        return stored[0] if stored else None

    async def count(self, where: CatalogFilter) -> int:
        """How many authorizers match."""
        query = select(func.count()).select_from(self._filtered(where).subquery("catalog"))
        async with self._db.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def counts(self, where: CatalogFilter) -> StoredCounts:
        """Of the authorizers that match: how many in each binding state, and how many each platform
        holds an authorization of (any status)."""
        matching = self._filtered(where).subquery("catalog")
        by_binding = select(matching.c.binding, func.count()).group_by(matching.c.binding)
        by_platform = (
            select(_A.c.platform_id, func.count(func.distinct(_A.c.authorizer_appid)))
            .select_from(_A.join(matching, matching.c.appid == _A.c.authorizer_appid))
            .group_by(_A.c.platform_id)
        )
        async with self._db.engine.connect() as conn:
            bindings = {binding: int(n) for binding, n in (await conn.execute(by_binding)).all()}
            platforms = {platform: int(n) for platform, n in (await conn.execute(by_platform)).all()}
        return StoredCounts(by_binding=bindings, by_platform=platforms)

    async def _stored(self, conn: Any, rows: Sequence[Any]) -> list[StoredRow]:
        grants = await self._grants(conn, [row.appid for row in rows])
        return [
            StoredRow(
                authorizer_appid=row.appid,
                status=row.status,
                kind=row.kind,
                nick_name=row.nick_name,
                principal_name=row.principal_name,
                verify_type=row.verify_type,
                binding=row.binding,
                open_appid=row.open_appid,
                synced_at=row.synced_at,
                grants=grants.get(row.appid, []),
            )
            for row in rows
        ]

    async def _grants(self, conn: Any, appids: Sequence[str]) -> dict[str, list[StoredGrant]]:
        if not appids:
            return {}
        authorizations = (await conn.execute(select(_A).where(_A.c.authorizer_appid.in_(appids)))).all()
        keys = [f"authorizer:{a.platform_id}:{a.authorizer_appid}" for a in authorizations]
        tokens = {
            c.key: c
            for c in (
                await conn.execute(
                    select(_C.c.key, _C.c.expires_at, _C.c.problem, _C.c.blocked_until).where(
                        _C.c.key.in_(keys)
                    )
                )
            ).all()
        }
        grants: dict[str, list[StoredGrant]] = {}
        for a in sorted(authorizations, key=lambda a: (a.authorizer_appid, a.platform_id)):
            token = tokens.get(f"authorizer:{a.platform_id}:{a.authorizer_appid}")
            grants.setdefault(a.authorizer_appid, []).append(
                StoredGrant(
                    platform_id=a.platform_id,
                    func_ids=sorted(int(i) for i in a.func_ids.split(",") if i),
                    authorized_at=a.authorized_at,
                    status=a.status,
                    revoked_at=a.revoked_at,
                    token_expires_at=token.expires_at if token is not None else None,
                    token_problem=token.problem if token is not None else None,
                    token_blocked_until=token.blocked_until if token is not None else None,
                )
            )
        return grants

"""The catalog's queries: one row per authorizer across every platform, filtered, in keyset pages.

A row's status is derived from its authorizations (active if any is; else needing re-authorization if any
is; else revoked); its name, kind and binding come from the profile the last sync or authorization saved.
``catalog_entries`` keeps that summary per authorizer, indexed: every write to an authorization or a
profile calls ``refresh_entries`` in its own transaction, so a page is one indexed range read in appid
order that stops after ``limit`` rows, whatever the catalog's size.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from typing import Any

import msgspec
from sqlalchemy import Executable, Select, bindparam, case, func, literal, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.store.database import Database
from gateway.store.tables import Authorization, AuthorizerProfileRow, CatalogEntry, Credential

__all__ = [
    "CatalogFilter",
    "CatalogQuery",
    "StoredCounts",
    "StoredGrant",
    "StoredRow",
    "refresh_entries",
]

_A = Authorization.__table__  # type: ignore[attr-defined]
_P = AuthorizerProfileRow.__table__  # type: ignore[attr-defined]
_C = Credential.__table__  # type: ignore[attr-defined]
_E = CatalogEntry.__table__  # type: ignore[attr-defined]
_ENTRY_COLUMNS = ("authorizer_appid", "status", "platforms", "kind", "binding", "search")


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
    binding_target: str | None = None


class StoredCounts(msgspec.Struct, frozen=True, kw_only=True):
    """Authorizers by binding state (only the states that occur) and by platform (those asked for)."""

    by_binding: dict[str, int]
    by_platform: dict[str, int]


async def refresh_entries(session: AsyncSession, db: Database, appids: Collection[str]) -> None:
    """Rewrite the catalog entries of ``appids`` from their authorizations and profiles, in the
    transaction of ``session`` (the one that changed them)."""
    if appids:
        await session.execute(_refresh_statement(db.is_postgresql), {"appids": list(appids)})


@functools.cache
def _refresh_statement(postgresql: bool) -> Executable:
    """Built once per dialect (it is on the path of every authorization and profile write)."""

    def count(state: str) -> Any:
        return func.sum(case((_A.c.status == state, 1), else_=0))

    status = case(
        (count("active") > 0, "active"),
        (count("reauthorization_required") > 0, "reauthorization_required"),
        else_="revoked",
    )
    appid = _A.c.authorizer_appid
    source = (
        select(
            appid,
            status,
            literal("|") + func.aggregate_strings(_A.c.platform_id, "|") + literal("|"),
            _P.c.kind,
            func.coalesce(_P.c.binding, "unknown"),
            func.lower(
                appid
                + literal("\n")
                + func.coalesce(_P.c.nick_name, "")
                + literal("\n")
                + func.coalesce(_P.c.principal_name, "")
            ),
        )
        .select_from(_A.outerjoin(_P, _P.c.authorizer_appid == appid))
        .where(appid.in_(bindparam("appids", expanding=True)))
        .group_by(appid, _P.c.kind, _P.c.binding, _P.c.nick_name, _P.c.principal_name)
        .order_by(appid)  # rows locked in one order: concurrent refreshes of overlapping sets cannot deadlock
    )
    dialect_insert = pg_insert if postgresql else sqlite_insert
    insert = dialect_insert(_E).from_select(list(_ENTRY_COLUMNS), source)  # Core: not an ORM bulk insert
    return insert.on_conflict_do_update(
        index_elements=["authorizer_appid"],
        set_={name: insert.excluded[name] for name in _ENTRY_COLUMNS[1:]},
    )


def _conditions(where: CatalogFilter) -> list[Any]:
    conditions: list[Any] = []
    if where.platform is not None:
        conditions.append(_E.c.platforms.contains(f"|{where.platform}|", autoescape=True))
    if where.kind is not None:
        conditions.append(_E.c.kind == where.kind)
    if where.status is not None:
        conditions.append(_E.c.status == where.status)
    if where.binding is not None:
        conditions.append(_E.c.binding == where.binding)
    if where.q:
        conditions.append(_E.c.search.contains(where.q.lower(), autoescape=True))
    return conditions


def _rows() -> Select[Any]:
    return select(
        _E.c.authorizer_appid.label("appid"),
        _E.c.status,
        _E.c.kind,
        _P.c.nick_name,
        _P.c.principal_name,
        _P.c.verify_type,
        _E.c.binding,
        _P.c.open_appid,
        _P.c.synced_at,
        _P.c.binding_target,
    ).select_from(_E.outerjoin(_P, _P.c.authorizer_appid == _E.c.authorizer_appid))


class CatalogQuery:
    """Reads the catalog in pages ordered by authorizer appid (stable, keyset)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def page(self, where: CatalogFilter, after: str | None, limit: int) -> tuple[list[StoredRow], bool]:
        """Up to ``limit`` rows after the appid ``after``; and whether more follow."""
        query = _rows().where(*_conditions(where))
        if after is not None:
            query = query.where(_E.c.authorizer_appid > after)
        query = query.order_by(_E.c.authorizer_appid).limit(limit + 1)
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
            more = len(rows) > limit
            stored = await self._stored(conn, rows[:limit])
        return stored, more

    async def one(self, appid: str) -> StoredRow | None:
        """The row of one authorizer, or None when no platform ever held its authorization."""
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(_rows().where(_E.c.authorizer_appid == appid))).all()
            stored = await self._stored(conn, rows)
        return stored[0] if stored else None

    async def count(self, where: CatalogFilter) -> int:
        """How many authorizers match."""
        query = select(func.count()).select_from(_E).where(*_conditions(where))
        async with self._db.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def counts(self, where: CatalogFilter, platform_ids: Sequence[str]) -> StoredCounts:
        """Of the authorizers that match: how many in each binding state, and how many each of
        ``platform_ids`` holds an authorization of (any status). One pass over the entries."""
        per_platform = [
            func.sum(case((_E.c.platforms.contains(f"|{p}|", autoescape=True), 1), else_=0))
            for p in platform_ids
        ]
        query = (
            select(_E.c.binding, func.count(), *per_platform)
            .where(*_conditions(where))
            .group_by(_E.c.binding)
        )
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return StoredCounts(
            by_binding={row[0]: int(row[1]) for row in rows},
            by_platform={p: sum(int(row[2 + i] or 0) for row in rows) for i, p in enumerate(platform_ids)},
        )

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
                binding_target=row.binding_target,
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

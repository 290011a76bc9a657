"""The catalog and the audit log for auditors (scope ``catalog``; the audit log also ``admin``).

The query parameters are declared once here, as annotated types, and the auditors' pages
(``gateway.http.pages``) take the same ones.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter
from litestar.response import Stream

from gateway.catalog.service import MAX_LIMIT, Binding, Catalog, CatalogPage, Kind, Status
from gateway.errors import filter_text
from gateway.http.guards import CLIENT_KEY, Requires
from gateway.http.openapi import V1_ERRORS
from gateway.store import Store
from gateway.store.catalog import CatalogFilter

__all__ = [
    "AuditEntryView",
    "AuditLogController",
    "AuditLogPage",
    "CatalogController",
    "catalog_filter",
    "read_audit_log",
]

_NO_STORE = {"Cache-Control": "no-store"}
# The audit log's bounds.
_AUDIT_PAGE_MAX = 500
_UNIX_TIME_MAX = 2**40
_AUDIT_ID_MAX = 2**62

# The catalog's filters; an empty value is no filter.
PlatformFilter = Annotated[
    str, QueryParameter(description="Only authorizations of this platform (its registry id)")
]
KindFilter = Annotated[Literal[Kind, ""], QueryParameter(description="Official accounts or mini programs")]
StatusFilter = Annotated[Literal[Status, ""], QueryParameter(description="The authorizer's status")]
# ``binding`` is also a dependency's name: handlers take it as ``binding_state``.
BindingFilter = Annotated[
    Literal[Binding, ""],
    QueryParameter(name="binding", description="Its open account: the group's, another, none, or not known"),
]
TextFilter = Annotated[
    str,
    QueryParameter(
        max_length=200, description="Part of the appid, the name or the principal name (any case)"
    ),
]
CatalogLimit = Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT, description="Rows per page (default 100)")]
CatalogCursor = Annotated[str, QueryParameter(description="The next_cursor of the page before")]

# The audit log's.
Actor = Annotated[str, QueryParameter(description="Who acted: a client id, an administrator, or wechat")]
Action = Annotated[
    str, QueryParameter(description="What was done, e.g. token.issued or authorization.revoked")
]
AuthorizerAppid = Annotated[str, QueryParameter(description="Only entries about this authorizer")]
PlatformId = Annotated[str, QueryParameter(description="Only entries about this platform")]
Since = Annotated[
    int | None, QueryParameter(ge=0, le=_UNIX_TIME_MAX, description="Only entries at or after this Unix time")
]
Until = Annotated[
    int | None, QueryParameter(ge=0, le=_UNIX_TIME_MAX, description="Only entries before this Unix time")
]
AuditLimit = Annotated[
    int, QueryParameter(ge=1, le=_AUDIT_PAGE_MAX, description="Entries per page (default 100)")
]
AuditCursor = Annotated[
    int | None,
    QueryParameter(ge=1, le=_AUDIT_ID_MAX, description="The next_cursor of the page before: older entries"),
]


class AuditEntryView(msgspec.Struct, frozen=True):
    """One line of the audit log."""

    id: int
    at: float
    actor: str
    action: str
    platform: str | None
    authorizer_appid: str | None
    detail: str | None


class AuditLogPage(msgspec.Struct, frozen=True):
    """``GET /v1/audit-log``: newest first."""

    items: list[AuditEntryView]
    next_cursor: str | None


def catalog_filter(
    catalog: Catalog,
    platform: str,
    kind: Kind | Literal[""],
    status: Status | Literal[""],
    binding: Binding | Literal[""],
    q: str,
) -> CatalogFilter:
    """The filters as the query gave them (checked against the registry by the catalog)."""
    return catalog.filters(
        platform=platform, kind=kind or None, status=status or None, binding=binding or None, q=q
    )


class CatalogController(Controller):
    """One view of every authorizer across every component."""

    path = "/v1"
    tags = ["catalog"]
    guards = [Requires("catalog")]
    security = CLIENT_KEY

    @get("/catalog", summary="The catalog", cache=False, responses=V1_ERRORS)
    async def catalog(
        self,
        catalog: NamedDependency[Catalog],
        platform: PlatformFilter = "",
        kind: KindFilter = "",
        status: StatusFilter = "",
        binding_state: BindingFilter = "",
        q: TextFilter = "",
        limit: CatalogLimit = 100,
        cursor: CatalogCursor = "",
    ) -> CatalogPage:
        """Rows filtered by platform, kind, status, binding and free text ``q``; keyset pages."""
        where = catalog_filter(catalog, platform, kind, status, binding_state, q)
        return await catalog.page(where, limit=limit, cursor=cursor)

    @get(
        "/catalog.csv",
        summary="The catalog as CSV",
        media_type="text/csv",
        cache=False,
        responses=V1_ERRORS,
    )
    async def catalog_csv(
        self,
        catalog: NamedDependency[Catalog],
        platform: PlatformFilter = "",
        kind: KindFilter = "",
        status: StatusFilter = "",
        binding_state: BindingFilter = "",
        q: TextFilter = "",
    ) -> Stream:
        """The same rows as ``/v1/catalog``, streamed."""
        rows = await catalog.csv(catalog_filter(catalog, platform, kind, status, binding_state, q))
        headers = {"Content-Disposition": 'attachment; filename="catalog.csv"'} | _NO_STORE
        return Stream(rows, media_type="text/csv; charset=utf-8", headers=headers)


class AuditLogController(Controller):
    """What was done, for auditors and administrators."""

    path = "/v1"
    tags = ["catalog"]
    guards = [Requires("catalog", "admin")]
    security = CLIENT_KEY

    @get("/audit-log", summary="The audit log", cache=False, responses=V1_ERRORS)
    async def audit_log(
        self,
        store: NamedDependency[Store],
        actor: Actor = "",
        action: Action = "",
        authorizer_appid: AuthorizerAppid = "",
        platform: PlatformId = "",
        since: Since = None,
        until: Until = None,
        limit: AuditLimit = 100,
        cursor: AuditCursor = None,
    ) -> AuditLogPage:
        """Who was handed what, which links were made, which bindings changed; newest first."""
        return await read_audit_log(
            store,
            actor=actor,
            action=action,
            authorizer_appid=authorizer_appid,
            platform=platform,
            since=since,
            until=until,
            limit=limit,
            cursor=cursor,
        )


async def read_audit_log(
    store: Store,
    *,
    actor: str = "",
    action: str = "",
    authorizer_appid: str = "",
    platform: str = "",
    since: int | None = None,
    until: int | None = None,
    limit: int = 100,
    cursor: int | None = None,
) -> AuditLogPage:
    """One page of the audit log, newest first: ``cursor`` (an id) continues with older entries; the
    text filters (empty: none) are refused by name for a control character."""
    pairs, more = await store.audit.page(
        before_id=cursor,
        limit=limit,
        actor=filter_text("actor", actor),
        action=filter_text("action", action),
        authorizer_appid=filter_text("authorizer_appid", authorizer_appid),
        platform_id=filter_text("platform", platform),
        since=since,
        until=until,
    )
    items = [
        AuditEntryView(i, r.at, r.actor, r.action, r.platform_id, r.authorizer_appid, r.detail)
        for i, r in pairs
    ]
    return AuditLogPage(items, str(pairs[-1][0]) if more and pairs else None)

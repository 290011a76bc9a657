"""The catalog and the audit log for auditors (scope ``catalog``; the audit log also ``admin``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.response import Stream

from gateway.access import require
from gateway.catalog import Catalog, CatalogPage
from gateway.errors import ApiError
from gateway.http.errors import V1_ERRORS
from gateway.http.params import whole_number
from gateway.registry import Client
from gateway.store import Store

__all__ = ["AuditEntryView", "AuditLogPage", "CatalogController", "read_audit_log"]

_NO_STORE = {"Cache-Control": "no-store"}


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


class CatalogController(Controller):
    """One view of every authorizer across every component."""

    path = "/v1"
    tags = ["catalog"]

    @get("/catalog", summary="The catalog", cache=False, responses=V1_ERRORS)
    async def catalog(
        self,
        request: Request[Any, Any, Any],
        client: NamedDependency[Client],
        catalog: NamedDependency[Catalog],
    ) -> CatalogPage:
        """Rows filtered by platform, kind, status, binding and free text ``q``; keyset pages."""
        require(client, "catalog")
        return await catalog.page(request.query_params)

    @get(
        "/catalog.csv", summary="The catalog as CSV", media_type="text/csv", cache=False, responses=V1_ERRORS
    )
    async def catalog_csv(
        self,
        request: Request[Any, Any, Any],
        client: NamedDependency[Client],
        catalog: NamedDependency[Catalog],
    ) -> Stream:
        """The same rows as ``/v1/catalog``, streamed."""
        require(client, "catalog")
        rows = await catalog.csv(request.query_params)
        headers = {"Content-Disposition": 'attachment; filename="catalog.csv"'} | _NO_STORE
        return Stream(rows, media_type="text/csv; charset=utf-8", headers=headers)

    @get("/audit-log", summary="The audit log", cache=False, responses=V1_ERRORS)
    async def audit_log(
        self,
        request: Request[Any, Any, Any],
        client: NamedDependency[Client],
        store: NamedDependency[Store],
    ) -> AuditLogPage:
        """Who was handed what, which links were made, which bindings changed; newest first."""
        if "catalog" not in client.scopes and "admin" not in client.scopes:
            raise ApiError(
                403, "forbidden", f"client '{client.id}' holds neither the scope 'catalog' nor 'admin'"
            )
        return await read_audit_log(store, request.query_params)


async def read_audit_log(store: Store, params: Mapping[str, str]) -> AuditLogPage:
    """One page of the audit log as the query ``params`` ask: ``limit``, ``cursor`` (an id: older
    entries), ``actor``, ``action``, ``authorizer_appid``, ``platform``, ``since``, ``until``."""
    limit = whole_number(params.get("limit"), "limit", 100, 1, 500)
    before = whole_number(params.get("cursor"), "cursor", None, 1, 2**62)
    pairs, more = await store.audit.page(
        before_id=before,
        limit=limit or 100,
        actor=params.get("actor") or None,
        action=params.get("action") or None,
        authorizer_appid=params.get("authorizer_appid") or None,
        platform_id=params.get("platform") or None,
        since=whole_number(params.get("since"), "since", None, 0, 2**40),
        until=whole_number(params.get("until"), "until", None, 0, 2**40),
    )
    items = [
        AuditEntryView(i, r.at, r.actor, r.action, r.platform_id, r.authorizer_appid, r.detail)
        for i, r in pairs
    ]
    return AuditLogPage(items, str(pairs[-1][0]) if more and pairs else None)

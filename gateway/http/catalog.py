"""The catalog and the audit log for auditors (scope ``catalog``; the audit log also ``admin``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.response import Stream

from gateway.access.service import require
from gateway.catalog.service import BINDINGS, KINDS, MAX_LIMIT, STATUSES, Catalog, CatalogPage
from gateway.errors import Forbidden, filter_text
from gateway.http.errors import V1_ERRORS
from gateway.http.params import number_param, reads_query, text_param, whole_number
from gateway.registry.model import Client
from gateway.store import Store

__all__ = ["AuditEntryView", "AuditLogPage", "CatalogController", "read_audit_log"]

_NO_STORE = {"Cache-Control": "no-store"}
# The audit log's bounds, read by `read_audit_log` and listed in the OpenAPI document.
_AUDIT_PAGE_MAX = 500
_UNIX_TIME_MAX = 2**40
_AUDIT_ID_MAX = 2**62
_FILTERS = (
    text_param("platform", "Only authorizations of this platform (its registry id)"),
    text_param("kind", "Official accounts or mini programs", choices=KINDS),
    text_param("status", "The authorizer's status", choices=STATUSES),
    text_param("binding", "Its open account: the group's, another, none, or not known", choices=BINDINGS),
    text_param("q", "Part of the appid, the name or the principal name (any case)", max_length=200),
)
_CATALOG_PAGE = reads_query(
    *_FILTERS,
    number_param("limit", "Rows per page (default 100)", 1, MAX_LIMIT),
    text_param("cursor", "The next_cursor of the page before"),
)
_AUDIT_LOG_PAGE = reads_query(
    text_param("actor", "Who acted: a client id, an administrator, or wechat"),
    text_param("action", "What was done, e.g. token.issued or authorization.revoked"),
    text_param("authorizer_appid", "Only entries about this authorizer"),
    text_param("platform", "Only entries about this platform"),
    number_param("since", "Only entries at or after this Unix time", 0, _UNIX_TIME_MAX),
    number_param("until", "Only entries before this Unix time", 0, _UNIX_TIME_MAX),
    number_param("limit", "Entries per page (default 100)", 1, _AUDIT_PAGE_MAX),
    number_param("cursor", "The next_cursor of the page before: older entries", 1, _AUDIT_ID_MAX),
)


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

    @get("/catalog", summary="The catalog", cache=False, responses=V1_ERRORS, operation_class=_CATALOG_PAGE)
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
        "/catalog.csv",
        summary="The catalog as CSV",
        media_type="text/csv",
        cache=False,
        responses=V1_ERRORS,
        operation_class=reads_query(*_FILTERS),
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

    @get(
        "/audit-log",
        summary="The audit log",
        cache=False,
        responses=V1_ERRORS,
        operation_class=_AUDIT_LOG_PAGE,
    )
    async def audit_log(
        self,
        request: Request[Any, Any, Any],
        client: NamedDependency[Client],
        store: NamedDependency[Store],
    ) -> AuditLogPage:
        """Who was handed what, which links were made, which bindings changed; newest first."""
        if "catalog" not in client.scopes and "admin" not in client.scopes:
            raise Forbidden(f"client '{client.id}' holds neither the scope 'catalog' nor 'admin'")
        return await read_audit_log(store, request.query_params)


async def read_audit_log(store: Store, params: Mapping[str, str]) -> AuditLogPage:
    """One page of the audit log as the query ``params`` ask: ``limit``, ``cursor`` (an id: older
    entries), ``actor``, ``action``, ``authorizer_appid``, ``platform``, ``since``, ``until``."""
    limit = whole_number(params.get("limit"), "limit", 100, 1, _AUDIT_PAGE_MAX)
    before = whole_number(params.get("cursor"), "cursor", None, 1, _AUDIT_ID_MAX)
    pairs, more = await store.audit.page(
        before_id=before,
        limit=limit or 100,
        actor=filter_text("actor", params.get("actor")),
        action=filter_text("action", params.get("action")),
        authorizer_appid=filter_text("authorizer_appid", params.get("authorizer_appid")),
        platform_id=filter_text("platform", params.get("platform")),
        since=whole_number(params.get("since"), "since", None, 0, _UNIX_TIME_MAX),
        until=whole_number(params.get("until"), "until", None, 0, _UNIX_TIME_MAX),
    )
    items = [
        AuditEntryView(i, r.at, r.actor, r.action, r.platform_id, r.authorizer_appid, r.detail)
        for i, r in pairs
    ]
    return AuditLogPage(items, str(pairs[-1][0]) if more and pairs else None)

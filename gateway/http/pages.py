"""The auditors' pages (SPEC §4): the catalog behind a sign-in form, one account's detail, the audit log.

Plain HTML from templates, with no script; every page but the sign-in form needs a session, and every
form carries a CSRF token (``gateway.http.sessions``: Litestar's server-side sessions and CSRF middleware,
on these routes only). Refusals are pages too: without a session a page answers 303 to the sign-in form,
and a refusal (a filter not allowed, a bad cursor, an unknown account) or a stale form answers
``problem.html`` with its status (``gateway.http.errors.status_of``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from litestar import Controller, MediaType, Request, Router, get, post
from litestar.di import NamedDependency, Provide
from litestar.exceptions import PermissionDeniedException, ValidationException
from litestar.params import FromPath
from litestar.response import Redirect, Stream, Template

from gateway.catalog.service import BINDING_MEANINGS, BINDINGS, KINDS, STATUSES, Catalog
from gateway.errors import AuthorizerUnknown, Forbidden, Refused
from gateway.http.catalog import (
    Action,
    Actor,
    AuditCursor,
    AuditLimit,
    AuthorizerAppid,
    BindingFilter,
    CatalogCursor,
    CatalogLimit,
    KindFilter,
    PlatformFilter,
    PlatformId,
    Since,
    StatusFilter,
    TextFilter,
    Until,
    catalog_filter,
    read_audit_log,
)
from gateway.http.errors import status_of
from gateway.http.params import invalid_parameters
from gateway.http.sessions import Auditor, WebSessions, auditor_sessions, form_protection
from gateway.store import Store
from gateway.wechat.routing import PERMISSION_SET_NAMES

__all__ = ["CatalogPagesController", "LoginRequired", "catalog_pages"]

FILTERS = ("q", "platform", "kind", "status", "binding", "limit")
AUDIT_FILTERS = ("authorizer_appid", "actor", "action", "platform", "since", "until", "limit")
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_MAX_FORM_BYTES = 8 * 1024
_TITLES = {400: "Not a valid request", 403: "Refused", 404: "Not found", 422: "Not a valid request"}
_LABELS = {
    "official_account": "official account",
    "mini_program": "mini program",
    "reauthorization_required": "re-authorization required",
    "bound_elsewhere": "bound elsewhere",
    "console_binding_needed": "console binding needed",
    "not_fetched": "not fetched yet",
    "quota_exhausted": "quota exhausted",
}


class LoginRequired(Exception):
    """The request has no live session: its answer is the sign-in form."""


async def provide_auditor(request: Request[Any, Any, Any], sessions: NamedDependency[WebSessions]) -> Auditor:
    """The signed-in auditor of the request's session; LoginRequired otherwise (and a session no longer
    valid ends: its row is deleted, its cookie forgotten)."""
    auditor = sessions.auditor(request.session)
    if auditor is None:
        if request.session:
            request.clear_session()
        raise LoginRequired
    return auditor


def _page(template: str, context: dict[str, Any], *, status: int = 200) -> Template:
    return Template(
        template,
        context={"label": _label, "when": _when} | context,
        status_code=status,
        headers=PAGE_HEADERS,
        media_type=MediaType.HTML,
    )


def _label(value: str) -> str:
    return _LABELS.get(value, value)


def _when(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at)) if at else "never"


def _href(path: str, query: Mapping[str, str], **changes: str | None) -> str:
    """``path`` with ``query`` as changed (None removes a parameter)."""
    merged = {k: v for k, v in ({**query, **changes}).items() if v}
    return f"{path}?{urlencode(merged)}" if merged else path


def _to_login(_: Request[Any, Any, Any], __: LoginRequired) -> Redirect:
    """No session: to the sign-in form."""
    return Redirect("/catalog/login", status_code=303, headers=PAGE_HEADERS)


def _problem(_: Request[Any, Any, Any], exc: Refused) -> Template:
    """A refusal as a page: its status and its message, and the way back."""
    status = status_of(exc)
    title = _TITLES.get(status, "Not possible")
    return _page("problem.html", {"title": title, "problem": exc}, status=status)


def _invalid_parameters(request: Request[Any, Any, Any], exc: ValidationException) -> Template:
    """A query parameter Litestar refused, as a page naming it."""
    return _problem(request, invalid_parameters(request, exc))


def _stale_form(request: Request[Any, Any, Any], _: PermissionDeniedException) -> Template:
    """A form posted without the CSRF token of its page (the CSRF middleware's refusal)."""
    message = "The form has expired. Load the page again and retry."
    return _problem(request, Forbidden(message))


class CatalogPagesController(Controller):
    """Sign-in, the catalog table with its filters and CSV, one account, the audit log."""

    path = "/catalog"
    include_in_schema = False
    dependencies = {"auditor": Provide(provide_auditor)}
    exception_handlers = {
        LoginRequired: _to_login,
        Refused: _problem,
        ValidationException: _invalid_parameters,
        PermissionDeniedException: _stale_form,
    }

    @get("/login", cache=False)
    async def login_form(
        self, request: Request[Any, Any, Any], sessions: NamedDependency[WebSessions]
    ) -> Template | Redirect:
        """The sign-in form (straight to the catalog when already signed in)."""
        if sessions.auditor(request.session) is not None:
            return Redirect("/catalog", status_code=303, headers=PAGE_HEADERS)
        return self._login_page(signed_out="signed_out" in request.query_params)

    @post("/login", request_max_body_size=_MAX_FORM_BYTES)
    async def login(
        self, request: Request[Any, Any, Any], sessions: NamedDependency[WebSessions]
    ) -> Template | Redirect:
        """Check the key (the form's CSRF token was checked before); open a session and go to the
        catalog."""
        form = await request.form()
        try:
            session = sessions.sign_in(str(form.get("key") or ""))
        except Refused as refused:
            return self._login_page(error=refused.message)
        request.set_session(session)
        return Redirect("/catalog", status_code=303, headers=PAGE_HEADERS)

    @staticmethod
    def _login_page(*, error: str | None = None, signed_out: bool = False) -> Template:
        return _page("login.html", {"title": "Sign in", "error": error, "signed_out": signed_out})

    @post("/logout", request_max_body_size=_MAX_FORM_BYTES)
    async def logout(self, request: Request[Any, Any, Any]) -> Redirect:
        """End the session on the server (its cookie opens nothing afterwards) and forget the cookie."""
        request.clear_session()
        return Redirect("/catalog/login?signed_out", status_code=303, headers=PAGE_HEADERS)

    @get("/", cache=False)
    async def catalog_page(
        self,
        request: Request[Any, Any, Any],
        auditor: NamedDependency[Auditor],
        catalog: NamedDependency[Catalog],
        platform: PlatformFilter = "",
        kind: KindFilter = "",
        status: StatusFilter = "",
        binding_state: BindingFilter = "",
        q: TextFilter = "",
        limit: CatalogLimit = 100,
        cursor: CatalogCursor = "",
    ) -> Template:
        """The table for the filters of the query, with the counts of the same rows at the top."""
        params = request.query_params
        where = catalog_filter(catalog, platform, kind, status, binding_state, q)
        page = await catalog.page(where, limit=limit, cursor=cursor)
        counts = await catalog.counts(where)
        query = {name: params[name] for name in FILTERS if params.get(name)}
        context = {
            "title": "Catalog",
            "auditor": auditor,
            "page": page,
            "counts": counts,
            "filters": query,
            "platforms": catalog.registry.platforms,
            "choices": {"kind": KINDS, "status": STATUSES, "binding": BINDINGS},
            "binding_meanings": BINDING_MEANINGS,
            "href": lambda **changes: _href("/catalog", query, **changes),
            "csv_href": _href("/catalog/export.csv", query),
            "next_href": _href("/catalog", query, cursor=page.next_cursor) if page.next_cursor else None,
            "first_href": _href("/catalog", query) if params.get("cursor") else None,
        }
        return _page("catalog.html", context)

    @get("/export.csv", cache=False)
    async def catalog_csv(
        self,
        auditor: NamedDependency[Auditor],
        catalog: NamedDependency[Catalog],
        platform: PlatformFilter = "",
        kind: KindFilter = "",
        status: StatusFilter = "",
        binding_state: BindingFilter = "",
        q: TextFilter = "",
    ) -> Stream:
        """The rows of the page's filters as CSV (every page of them), for the signed-in auditor."""
        rows = await catalog.csv(catalog_filter(catalog, platform, kind, status, binding_state, q))
        headers = {"Content-Disposition": 'attachment; filename="catalog.csv"'} | PAGE_HEADERS
        return Stream(rows, media_type="text/csv; charset=utf-8", headers=headers)

    @get("/audit", cache=False)
    async def audit_page(
        self,
        request: Request[Any, Any, Any],
        auditor: NamedDependency[Auditor],
        store: NamedDependency[Store],
        actor: Actor = "",
        action: Action = "",
        authorizer_appid: AuthorizerAppid = "",
        platform: PlatformId = "",
        since: Since = None,
        until: Until = None,
        limit: AuditLimit = 100,
        cursor: AuditCursor = None,
    ) -> Template:
        """The audit log, newest first; the filters of ``/v1/audit-log`` apply (one account, …)."""
        log = await read_audit_log(
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
        query = {k: request.query_params[k] for k in AUDIT_FILTERS if request.query_params.get(k)}
        context = {
            "title": "Audit log",
            "auditor": auditor,
            "log": log,
            "filters": query,
            "next_href": _href("/catalog/audit", query, cursor=log.next_cursor) if log.next_cursor else None,
            "first_href": _href("/catalog/audit", query) if request.query_params.get("cursor") else None,
        }
        return _page("audit.html", context)

    @get("/{appid:str}", cache=False)
    async def account_page(
        self,
        appid: FromPath[str],
        auditor: NamedDependency[Auditor],
        catalog: NamedDependency[Catalog],
        store: NamedDependency[Store],
    ) -> Template:
        """One account: its authorizations with their permission sets, token health, binding, last sync,
        and what the audit log says of it lately."""
        row = await catalog.row(appid)
        if row is None:
            raise AuthorizerUnknown(appid, "No account with this appid is in the catalog.")
        context = {
            "title": row.name or row.authorizer_appid,
            "auditor": auditor,
            "row": row,
            "set_names": PERMISSION_SET_NAMES,
            "platform_names": {p.id: p.name for p in catalog.registry.platforms},
            "recent": await store.audit.recent(20, authorizer_appid=appid),
            "binding_meanings": BINDING_MEANINGS,
        }
        return _page("account.html", context)


def catalog_pages(*, csrf_secret: bytes, secure: bool) -> Router:
    """The pages behind their session and CSRF middleware; ``secure``: the gateway's public URL is https
    (its cookies are then Secure)."""
    return Router(
        path="/",
        route_handlers=[CatalogPagesController],
        middleware=[form_protection(csrf_secret, secure=secure), auditor_sessions(secure=secure)],
    )

"""The catalog for auditors (SPEC §6): every authorizer across every platform, one row each.

Filters are validated here (an unknown value is an `InvalidInput` naming the filter), pages are keyset
pages over the authorizer appid behind an opaque cursor, and the CSV export streams the same rows page by
page so its memory stays constant however large the catalog.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import time
from collections.abc import AsyncIterator, Callable
from typing import Literal, get_args

import msgspec

from gateway.errors import InvalidCursor, InvalidInput, filter_text
from gateway.registry.live import LiveRegistry, ReadsRegistry
from gateway.registry.model import Registry
from gateway.store.catalog import CatalogFilter, CatalogQuery, StoredGrant, StoredRow

__all__ = [
    "BINDINGS",
    "BINDING_MEANINGS",
    "KINDS",
    "STATUSES",
    "Binding",
    "Catalog",
    "CatalogCounts",
    "CatalogPage",
    "CatalogRow",
    "Kind",
    "PlatformGrant",
    "Status",
    "csv_line",
]

Kind = Literal["official_account", "mini_program"]
Status = Literal["active", "revoked", "reauthorization_required"]
Binding = Literal["bound", "bound_elsewhere", "unbound", "console_binding_needed", "unknown"]
KINDS: tuple[Kind, ...] = get_args(Kind)
STATUSES: tuple[Status, ...] = get_args(Status)
BINDINGS: tuple[Binding, ...] = get_args(Binding)
MAX_LIMIT = 500
CSV_PAGE = 500
CSV_COLUMNS = (
    "authorizer_appid",
    "name",
    "principal_name",
    "verify_type",
    "kind",
    "status",
    "platforms",
    "open_appid",
    "binding",
    "synced_at",
    "token_health",
    "binding_target",
)
# What each binding state (SPEC §6, §11) means, and who acts on it: for the auditors' page.
BINDING_MEANINGS: dict[str, tuple[str, str]] = {
    "bound": ("bound to the open account the binding rules give it (its target)", "nobody"),
    "bound_elsewhere": (
        "bound to another open account: users get another unionid; the gateway never unbinds it",
        "an auditor: an audit finding for group IT to settle with the account's owner",
    ),
    "unbound": (
        "bound to no open account; WeChat's API can bind it (same principal as its target)",
        "group IT: `gateway open-binding ensure` binds it (unless its target already holds 5 "
        "unverified: verify that open account first)",
    ),
    "console_binding_needed": (
        "its target belongs to another principal (a related company): WeChat's API refuses that",
        "the Open Platform administrator: bind it in the Open Platform console to the target shown "
        "(`gateway open-binding console-list`)",
    ),
    "unknown": (
        "not known: no component holding set 24/25 (or 3/30) can ask, or it was never checked",
        "group IT: grant open-account management to one component, then `gateway catalog sync`",
    ),
}
TokenHealth = Literal["ok", "not_fetched", "failing", "quota_exhausted", "none"]


class PlatformGrant(msgspec.Struct, frozen=True):
    """Which platform holds an authorization, with which permission sets, since when, in what state."""

    platform: str
    func_ids: list[int]
    authorized_at: int
    status: str
    revoked_at: int | None


class CatalogRow(msgspec.Struct, frozen=True):
    """One authorizer (SPEC §6)."""

    authorizer_appid: str
    name: str | None
    principal_name: str | None
    verify_type: int | None
    kind: str | None
    status: str
    platforms: list[PlatformGrant]
    open_appid: str | None
    binding: str
    synced_at: int | None
    token_health: TokenHealth
    binding_target: str | None = None  # the open account SPEC §11 sends it to, when known


class CatalogPage(msgspec.Struct, frozen=True):
    """``GET /v1/catalog``."""

    items: list[CatalogRow]
    total: int
    next_cursor: str | None


class CatalogCounts(msgspec.Struct, frozen=True):
    """Of the rows a filter matches: how many in each binding state (in the order of ``BINDINGS``) and
    how many each platform holds an authorization of (in registry order); zeros included."""

    by_binding: dict[str, int]
    by_platform: dict[str, int]


class Catalog(ReadsRegistry):
    """Reads the catalog for the API, the CSV export and the auditors' page."""

    def __init__(
        self, registry: LiveRegistry, query: CatalogQuery, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._live = registry
        self._query = query
        self._clock = clock

    @property
    def registry(self) -> Registry:
        """The registry the filters are checked against."""
        return self._registry

    def filters(
        self,
        *,
        platform: str | None = None,
        kind: Kind | None = None,
        status: Status | None = None,
        binding: Binding | None = None,
        q: str | None = None,
    ) -> CatalogFilter:
        """A request's filters (None or empty: no filter); `InvalidInput` naming ``platform`` when the
        registry has no such platform, or ``q`` for a control character."""
        platform = platform or None
        if platform is not None and self._registry.platform(platform) is None:
            raise InvalidInput("platform", f"no platform '{platform}' in the registry")
        q = filter_text("q", (q or "").strip())
        return CatalogFilter(platform=platform, kind=kind, status=status, binding=binding, q=q)

    async def page(self, where: CatalogFilter, *, limit: int = 100, cursor: str | None = None) -> CatalogPage:
        """One page of rows, the total matching, and the cursor of the next page (`InvalidCursor` for a
        ``cursor`` this API did not give out)."""
        decoded = _decode_cursor(cursor)
        after, total = (None, None) if decoded is None else decoded
        rows, more = await self._query.page(where, after, limit)
        if total is None:
            # Counted once, on the first page (the whole result when it fits); later pages carry it in
            # their cursor, so walking a filter costs one count, not one per page.
            total = len(rows) if after is None and not more else await self._query.count(where)
        next_cursor = _encode_cursor(rows[-1].authorizer_appid, total) if more and rows else None
        return CatalogPage([self._row(r) for r in rows], total, next_cursor)

    async def counts(self, where: CatalogFilter) -> CatalogCounts:
        """Counts by binding state and by platform of the rows ``where`` matches."""
        platforms = [p.id for p in self._registry.platforms]
        stored = await self._query.counts(where, platforms)
        return CatalogCounts(
            by_binding={b: stored.by_binding.get(b, 0) for b in BINDINGS},
            by_platform={p: stored.by_platform.get(p, 0) for p in platforms},
        )

    async def row(self, appid: str) -> CatalogRow | None:
        """One authorizer's row, or None when the catalog does not know it."""
        stored = await self._query.one(appid)
        return None if stored is None else self._row(stored)

    async def csv(self, where: CatalogFilter) -> AsyncIterator[bytes]:
        """The rows of the filter as CSV, produced a page at a time."""

        async def produce() -> AsyncIterator[bytes]:
            yield csv_line(CSV_COLUMNS)
            after = None
            while True:
                rows, more = await self._query.page(where, after, CSV_PAGE)
                chunk = b"".join(csv_line(self._csv_fields(self._row(r))) for r in rows)
                if chunk:
                    yield chunk
                if not more or not rows:
                    return
                after = rows[-1].authorizer_appid

        return produce()

    def _row(self, row: StoredRow) -> CatalogRow:
        return CatalogRow(
            authorizer_appid=row.authorizer_appid,
            name=row.nick_name,
            principal_name=row.principal_name,
            verify_type=row.verify_type,
            kind=row.kind,
            status=row.status,
            platforms=[
                PlatformGrant(
                    g.platform_id,
                    g.func_ids,
                    int(g.authorized_at),
                    g.status,
                    int(g.revoked_at) if g.revoked_at is not None else None,
                )
                for g in row.grants
            ],
            open_appid=row.open_appid,
            binding=row.binding,
            synced_at=int(row.synced_at) if row.synced_at is not None else None,
            token_health=self._health(row.grants),
            binding_target=row.binding_target,
        )

    def _health(self, grants: list[StoredGrant]) -> TokenHealth:
        """How the tokens of the live authorizations fare: the worst of them."""
        live = [g for g in grants if g.status == "active"]
        if not live:
            return "none"
        now = self._clock()
        if any(g.token_blocked_until is not None and g.token_blocked_until > now for g in live):
            return "quota_exhausted"
        if any(g.token_problem for g in live):
            return "failing"
        if all(g.token_expires_at is None for g in live):
            return "not_fetched"
        return "ok"

    @staticmethod
    def _csv_fields(row: CatalogRow) -> tuple[str, ...]:
        platforms = ";".join(
            f"{g.platform}:{'|'.join(str(i) for i in g.func_ids)}:{g.status}" for g in row.platforms
        )
        synced = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row.synced_at)) if row.synced_at else ""
        return (
            row.authorizer_appid,
            row.name or "",
            row.principal_name or "",
            "" if row.verify_type is None else str(row.verify_type),
            row.kind or "",
            row.status,
            platforms,
            row.open_appid or "",
            row.binding,
            synced,
            row.token_health,
            row.binding_target or "",
        )


def csv_line(fields: tuple[str, ...]) -> bytes:
    """One CSV record, spreadsheet-safe."""
    buffer = io.StringIO()
    # A leading =, +, - or @ would run as a formula in a spreadsheet: such cells get a quote in front.
    csv.writer(buffer).writerow("'" + f if f[:1] in ("=", "+", "-", "@") else f for f in fields)
    return buffer.getvalue().encode()


def _encode_cursor(appid: str, total: int) -> str:
    return base64.urlsafe_b64encode(f"v2:{total}:{appid}".encode()).decode().rstrip("=")


def _decode_cursor(raw: str | None) -> tuple[str, int | None] | None:
    """(the appid to continue after, the total the first page counted); None without a cursor. A ``v1``
    cursor (before totals were carried) has no total."""
    if not raw:
        return None
    invalid = InvalidCursor()
    try:
        decoded = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise invalid from None
    if len(decoded) > 90:
        raise invalid
    if decoded.startswith("v1:"):
        return decoded[3:], None
    version, total, appid = [*decoded.split(":", 2), "", ""][:3]
    if version != "v2" or not total.isascii() or not total.isdigit() or len(total) > 12 or not appid:
        raise invalid
    return appid, int(total)

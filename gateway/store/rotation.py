"""Re-sealing every secret at rest under the current key: ``gateway rotate-secret-key``.

Each sealed column is walked in primary-key order, a batch at a time. A value opens under any key the box
holds (the new ``GATEWAY_SECRET_KEY`` or one of ``GATEWAY_PREVIOUS_SECRET_KEYS``) and, unless it already
is under the new key, is sealed again under it, bound to the same context. Each batch is written in one
transaction, and each row only if it still holds the value read (compare and set): replicas keep serving
meanwhile, and a token a replica renewed in between is left as that replica wrote it, then read again.
Running it twice re-seals nothing the second time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, RowMapping, Table, and_, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.crypto import SecretBox
from gateway.errors import SealedSecretError
from gateway.store.tables import metadata

__all__ = ["SEALED_COLUMNS", "ColumnReport", "SealedColumn", "rotate_secrets"]

DEFAULT_BATCH = 500
# A row written by someone else between our read and our write is read again, this many times at most.
_ATTEMPTS = 5


@dataclass(frozen=True)
class SealedColumn:
    """A column of sealed values and the context each row's value is sealed with: ``context`` is a
    format string over the row's columns, spelled exactly as the store module that seals it spells it."""

    table: str
    column: str
    context: str

    def context_of(self, row: Mapping[str, Any] | RowMapping) -> str:
        """The associated data ``row``'s value was sealed with."""
        return self.context.format_map(row)


SEALED_COLUMNS = (
    SealedColumn("component_tickets", "ticket_sealed", "ticket:{platform_id}"),  # store.py
    SealedColumn("component_pushes", "payload_sealed", "push:{platform_id}"),  # store.py
    SealedColumn("credentials", "value_sealed", "credential:{key}"),  # credentials.py
    SealedColumn(
        "authorizations", "refresh_token_sealed", "refresh:{platform_id}:{authorizer_appid}"
    ),  # authorizations.py
    SealedColumn("inbound_messages", "body_sealed", "message:{id}"),  # deliveries.py
)


@dataclass
class ColumnReport:
    """What the rotation did to one column. ``unreadable`` and ``unsettled`` name rows by their
    identity (primary key), never by value."""

    table: str
    column: str
    resealed: int = 0
    current: int = 0  # already sealed under the new key
    unreadable: list[str] = field(default_factory=list)  # open under no key the box holds
    unsettled: list[str] = field(default_factory=list)  # rewritten by others at every attempt

    @property
    def ok(self) -> bool:
        """Whether every value of the column is now under the new key."""
        return not self.unreadable and not self.unsettled


async def rotate_secrets(
    engine: AsyncEngine, box: SecretBox, *, batch_size: int = DEFAULT_BATCH
) -> list[ColumnReport]:
    """Re-seal every value of every sealed column under ``box``'s current key; a report per column,
    in the order of :data:`SEALED_COLUMNS`."""
    return [await _Rotation(engine, box, column, batch_size).run() for column in SEALED_COLUMNS]


class _Rotation:
    """The walk over one sealed column."""

    def __init__(self, engine: AsyncEngine, box: SecretBox, sealed: SealedColumn, batch_size: int) -> None:
        self._engine = engine
        self._box = box
        self._sealed = sealed
        self._batch_size = batch_size
        self._table: Table = metadata.tables[sealed.table]
        self._key = list(self._table.primary_key.columns)
        self._value = self._table.c[sealed.column]
        self.report = ColumnReport(sealed.table, sealed.column)

    async def run(self) -> ColumnReport:
        after: tuple[Any, ...] | None = None
        while rows := await self._read(self._after(after)):
            pending = rows
            for _ in range(_ATTEMPTS):
                raced = await self._reseal(pending)
                if not raced:
                    break
                pending = await self._read(self._one_of(raced))
            else:
                self.report.unsettled.extend(self._identity(row) for row in pending)
            after = tuple(rows[-1][column.name] for column in self._key)
        return self.report

    def _after(self, after: tuple[Any, ...] | None) -> ColumnElement[bool] | None:
        if after is None:
            return None
        return tuple_(*self._key) > tuple_(*after)

    def _one_of(self, rows: Sequence[RowMapping]) -> ColumnElement[bool]:
        # Only rows that raced are read again: few, so a plain OR of their keys does.
        return or_(*(self._matches(row) for row in rows))

    def _matches(self, row: RowMapping) -> ColumnElement[bool]:
        return and_(*(column == row[column.name] for column in self._key))

    async def _read(self, where: ColumnElement[bool] | None) -> list[RowMapping]:
        query = select(self._table).where(self._value.is_not(None))
        if where is not None:
            query = query.where(where)
        query = query.order_by(*self._key).limit(self._batch_size)
        async with self._engine.connect() as conn:
            return list((await conn.execute(query)).mappings().all())

    async def _reseal(self, rows: Sequence[RowMapping]) -> list[RowMapping]:
        """Re-seal what ``rows`` hold in one transaction; returns the rows changed by others meanwhile."""
        changes = []
        for row in rows:
            sealed: str = row[self._value.name]
            context = self._sealed.context_of(row)
            try:
                plaintext = self._box.open(sealed, context=context)
            except SealedSecretError:
                self.report.unreadable.append(self._identity(row))
                continue
            if self._box.is_current(sealed):
                self.report.current += 1
            else:
                changes.append((row, self._box.seal(plaintext, context=context)))
        raced = []
        async with self._engine.begin() as conn:
            for row, resealed in changes:
                result = await conn.execute(
                    update(self._table)
                    .where(self._matches(row), self._value == row[self._value.name])
                    .values({self._value.name: resealed})
                )
                if result.rowcount:
                    self.report.resealed += 1
                else:
                    raced.append(row)
        return raced

    def _identity(self, row: RowMapping) -> str:
        keys = ", ".join(f"{column.name}={row[column.name]}" for column in self._key)
        return f"{self._sealed.table} ({keys})"

"""Tokens WeChat issued, with the leases that make each renewal happen once across replicas.

A credential row is keyed by what the token is for (see ``gateway.credentials.tokens.CredentialKey``). To
renew,
a replica takes the row's lease with one conditional UPDATE; whoever gets it fetches from WeChat and
writes the new value while releasing the lease, fenced by its owner id so that a replica whose lease
was taken over after a stall cannot overwrite its successor's token. Readers never take the lease.

``used_at`` says when a caller last used a credential. Each process notes uses in memory and writes them
here in batches (``mark_used``), never once per request; the renewer of every replica reads the column
(``due``) to keep warm only what was used recently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from sqlalchemy import ColumnElement, Connection, bindparam, delete, or_, select, update

from gateway.store.database import Database
from gateway.store.tables import Credential

# Core statements on a connection, not ORM sessions: this is the path of every token read and renewal,
# where the ORM's per-statement work was most of the store's cost.
_T = Credential.__table__  # type: ignore[attr-defined]

__all__ = ["CredentialStore", "Lease", "StoredCredential"]


class StoredCredential(msgspec.Struct, frozen=True):
    """A credential row with its value opened."""

    key: str
    value: str | None
    expires_at: float | None
    renew_after: float | None
    fetched_at: float | None
    lease_owner: str | None
    lease_until: float | None
    blocked_until: float | None
    problem: str | None
    used_at: float | None = None

    def valid_at(self, now: float) -> bool:
        """Whether the value exists and has not expired at ``now``."""
        return self.value is not None and self.expires_at is not None and self.expires_at > now


class Lease(msgspec.Struct, frozen=True):
    """A renewal lease just taken: the row under it, and whether a lapsed holder's lease was taken over."""

    credential: StoredCredential
    taken_over: bool


class CredentialStore:
    """Credential rows: read, lease, save, release, delete."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def _open(self, row: Any) -> StoredCredential:
        value = (
            self._db.box.open(row.value_sealed, context=f"credential:{row.key}") if row.value_sealed else None
        )
        return StoredCredential(
            key=row.key,
            value=value,
            expires_at=row.expires_at,
            renew_after=row.renew_after,
            fetched_at=row.fetched_at,
            lease_owner=row.lease_owner,
            lease_until=row.lease_until,
            blocked_until=row.blocked_until,
            problem=row.problem,
            used_at=row.used_at,
        )

    async def get(self, key: str) -> StoredCredential | None:
        """The credential ``key``, or None if it was never fetched."""
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(select(_T).where(_T.c.key == key))).first()
        return None if row is None else self._open(row)

    async def get_many(self, prefix: str) -> list[StoredCredential]:
        """Every credential whose key starts with ``prefix``."""
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(select(_T).where(_T.c.key.startswith(prefix, autoescape=True)))).all()
        return [self._open(row) for row in rows]

    async def try_lease(self, key: str, owner: str, lease_s: float) -> Lease | None:
        """Take the renewal lease of ``key`` if nobody holds an unexpired one; None if someone does.

        The lease comes with the row as it stands under it (so the caller sees whether another replica
        renewed meanwhile) and whether it was taken over from a holder whose lease lapsed.
        """
        now = self._db.clock()
        until = now + lease_s
        # Free or already ours (the common case, a new key included): taken in one statement. Otherwise
        # the row is read under lock to tell a live lease from a lapsed one to take over.
        insert = self._db.insert(_T).values(key=key, lease_owner=owner, lease_until=until)
        take_free = insert.on_conflict_do_update(
            index_elements=["key"],
            set_={"lease_owner": owner, "lease_until": until},
            where=or_(_T.c.lease_owner.is_(None), _T.c.lease_owner == owner),
        ).returning(*_T.c)

        def take(conn: Connection) -> tuple[Any, bool] | None:
            taken = conn.execute(take_free).first()
            if taken is not None:
                return taken, False
            # FOR UPDATE on PostgreSQL; on SQLite the upsert above already holds the write lock.
            row = conn.execute(select(_T).where(_T.c.key == key).with_for_update()).one()
            if row.lease_until is not None and row.lease_until >= now:
                return None
            conn.execute(update(_T).where(_T.c.key == key).values(lease_owner=owner, lease_until=until))
            return row, True

        outcome = await self._db.write(take)
        if outcome is None:
            return None
        row, taken_over = outcome
        if not taken_over:
            return Lease(self._open(row), taken_over=False)
        leased = msgspec.structs.replace(self._open(row), lease_owner=owner, lease_until=until)
        return Lease(leased, taken_over=True)

    async def extend(self, key: str, owner: str, lease_s: float) -> bool:
        """Push ``owner``'s lease on ``key`` further while a slow fetch goes on; False if it was lost."""
        extended = (
            update(_T)
            .where(_T.c.key == key, _T.c.lease_owner == owner)
            .values(lease_until=self._db.clock() + lease_s)
        )
        return await self._db.write(lambda conn: bool(conn.execute(extended).rowcount))

    async def save(self, key: str, owner: str, value: str, *, expires_at: float, renew_after: float) -> bool:
        """Write a freshly fetched value and release the lease; False (nothing written) if the lease
        is no longer ``owner``'s."""
        now = self._db.clock()
        sealed = self._db.box.seal(value, context=f"credential:{key}")
        saved = (
            update(_T)
            .where(_T.c.key == key, _T.c.lease_owner == owner)
            .values(
                value_sealed=sealed,
                expires_at=expires_at,
                renew_after=renew_after,
                fetched_at=now,
                lease_owner=None,
                lease_until=None,
                blocked_until=None,
                problem=None,
            )
        )
        return await self._db.write(lambda conn: bool(conn.execute(saved).rowcount))

    async def replace(self, key: str, value: str, *, expires_at: float, renew_after: float) -> None:
        """Write a value WeChat issued outside a renewal (api_query_auth's token), whoever holds the lease.

        The lease is taken from its holder: the fenced `save` of a renewal in flight then writes nothing,
        so a token fetched before the re-authorization (possibly dead already) cannot overwrite this one.
        """
        now = self._db.clock()
        values = {
            "value_sealed": self._db.box.seal(value, context=f"credential:{key}"),
            "expires_at": expires_at,
            "renew_after": renew_after,
            "fetched_at": now,
            "lease_owner": None,
            "lease_until": None,
            "problem": None,
        }
        upsert = (
            self._db.insert(_T)
            .values(key=key, **values)
            .on_conflict_do_update(index_elements=["key"], set_=values)
        )
        await self._db.write(lambda conn: conn.execute(upsert))

    async def release(
        self, key: str, owner: str, *, problem: str | None = None, blocked_until: float | None = None
    ) -> None:
        """Give the lease up without touching the value; record why the renewal failed, if it did."""
        values: dict[str, object] = {"lease_owner": None, "lease_until": None, "problem": problem}
        if blocked_until is not None:
            values["blocked_until"] = blocked_until
        released = update(_T).where(_T.c.key == key, _T.c.lease_owner == owner).values(**values)
        await self._db.write(lambda conn: conn.execute(released))

    async def drop_lease(self, key: str, owner: str) -> None:
        """Release ``owner``'s lease on a row that only ever held leases (no value): the row goes."""
        dropped = delete(_T).where(_T.c.key == key, _T.c.lease_owner == owner, _T.c.value_sealed.is_(None))
        await self._db.write(lambda conn: conn.execute(dropped))

    async def unblock(self, *keys: str, prefix: str | None = None) -> None:
        """Lift the 45009 breaker of ``keys`` and of every credential under ``prefix`` (quota cleared)."""
        match: ColumnElement[bool] = _T.c.key.in_(keys)
        if prefix is not None:
            match = or_(match, _T.c.key.startswith(prefix, autoescape=True))
        async with self._db.engine.begin() as conn:
            await conn.execute(update(_T).where(match).values(blocked_until=None, problem=None))

    async def due(
        self,
        now: float,
        limit: int = 100,
        *,
        used_since: float | None = None,
        always: Sequence[str] = (),
    ) -> list[str]:
        """Keys whose renewal time has come and which no live lease or breaker holds, soonest first.

        With ``used_since``, only those used since then, and those whose key starts with one of
        ``always``: the others are left to lapse (in SQL, so idle rows never crowd out ``limit``)."""
        conditions = [
            _T.c.renew_after <= now,
            or_(_T.c.lease_until.is_(None), _T.c.lease_until < now),
            or_(_T.c.blocked_until.is_(None), _T.c.blocked_until < now),
        ]
        if used_since is not None:
            warm = [_T.c.key.startswith(prefix, autoescape=True) for prefix in always]
            conditions.append(or_(_T.c.used_at >= used_since, *warm))
        query = select(_T.c.key).where(*conditions).order_by(_T.c.renew_after).limit(limit)
        async with self._db.engine.connect() as conn:
            return list((await conn.execute(query)).scalars())

    async def mark_used(self, uses: Mapping[str, float]) -> None:
        """Record that each key was used at the time given (a later use already recorded stays), in one
        transaction; keys without a row are ignored."""
        if not uses:
            return
        marked = (
            update(_T)
            .where(
                _T.c.key == bindparam("used_key"),
                or_(_T.c.used_at.is_(None), _T.c.used_at < bindparam("used_when")),
            )
            .values(used_at=bindparam("used_when"))
        )
        # Sorted: one lock order for replicas flushing overlapping keys at once.
        rows = [{"used_key": key, "used_when": when} for key, when in sorted(uses.items())]
        await self._db.write(lambda conn: conn.execute(marked, rows))

    async def valid_keys(self, prefix: str, now: float) -> set[str]:
        """Keys under ``prefix`` holding a value that has not expired at ``now`` (nothing opened)."""
        query = select(_T.c.key).where(
            _T.c.key.startswith(prefix, autoescape=True),
            _T.c.value_sealed.is_not(None),
            _T.c.expires_at > now,
        )
        async with self._db.engine.connect() as conn:
            return set((await conn.execute(query)).scalars())

    async def blocked(self, now: float) -> list[str]:
        """Keys whose 45009 breaker is open at ``now`` (nothing opened: cheap enough for every scrape)."""
        async with self._db.engine.connect() as conn:
            return list((await conn.execute(select(_T.c.key).where(_T.c.blocked_until > now))).scalars())

    async def delete(self, *keys: str) -> None:
        """Forget credentials (an authorization was revoked)."""
        async with self._db.engine.begin() as conn:
            await conn.execute(delete(_T).where(_T.c.key.in_(keys)))

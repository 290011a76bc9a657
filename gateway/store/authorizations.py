"""Authorizations: which authorizer granted which platform what, with the refresh token (sealed)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from sqlalchemy import and_, delete, or_, select, update
from sqlmodel import col

from gateway.store.catalog import refresh_entries
from gateway.store.database import Database
from gateway.store.tables import Authorization, AuthorizationCode, AuthorizerProfileRow

__all__ = [
    "AuthorizationStatus",
    "AuthorizationStore",
    "Binding",
    "BindingFacts",
    "CodeClaim",
    "CodeState",
    "Grant",
    "Profile",
    "StoredAuthorization",
]

AuthorizationStatus = Literal["active", "revoked", "reauthorization_required"]
CodeState = Literal["claimed", "exchanged", "refused", "unknown"]


class CodeClaim(msgspec.Struct, frozen=True):
    """An authorization code's row: its state, and ``won`` when this caller now holds its claim
    (``resumed``: taken over from a holder whose claim lapsed, which may have sent the code)."""

    state: CodeState
    platform_id: str
    authorizer_appid: str | None = None
    errcode: int | None = None
    problem: str | None = None
    won: bool = False
    resumed: bool = False


class StoredAuthorization(msgspec.Struct, frozen=True):
    """An authorization without its secret."""

    platform_id: str
    authorizer_appid: str
    func_ids: frozenset[int]
    status: AuthorizationStatus
    authorized_at: float
    updated_at: float
    revoked_at: float | None


@dataclass(frozen=True)
class Grant:
    """An authorization to record: who granted which platform what, with its refresh token."""

    platform_id: str
    authorizer_appid: str
    refresh_token: str = field(repr=False)  # a secret: never in a repr
    func_ids: frozenset[int]


class Binding(msgspec.Struct, frozen=True):
    """Where an account is bound: ``bound``, ``bound_elsewhere``, ``unbound``, ``console_binding_needed``
    or ``unknown``; and the open account SPEC §11 sends it to, when known."""

    state: str
    open_appid: str | None = None
    target: str | None = None


class BindingFacts(msgspec.Struct, frozen=True):
    """What the store knows of one account's binding: its principal and where it was last seen bound."""

    authorizer_appid: str
    principal_name: str
    binding: str
    open_appid: str | None
    target: str | None
    nick_name: str = ""


class Profile(msgspec.Struct, frozen=True):
    """What WeChat last said of an account."""

    authorizer_appid: str
    kind: str
    nick_name: str
    principal_name: str
    user_name: str = ""
    verify_type: int = -1
    service_type: int = 0
    account_status: int = 1
    synced_at: float = 0.0


_AUTHORIZATIONS = Authorization.__table__  # type: ignore[attr-defined]  # Core: executemany upserts
_PROFILES = AuthorizerProfileRow.__table__  # type: ignore[attr-defined]


def _func_ids(text: str) -> frozenset[int]:
    return frozenset(int(part) for part in text.split(",") if part)


# What _describe reads: every column but the sealed refresh token.
_DESCRIBED = tuple(c for c in _AUTHORIZATIONS.c if c.name != "refresh_token_sealed")


def _describe(row: Any) -> StoredAuthorization:
    return StoredAuthorization(
        platform_id=row.platform_id,
        authorizer_appid=row.authorizer_appid,
        func_ids=_func_ids(row.func_ids),
        status=row.status,  # written only from AuthorizationStatus
        authorized_at=row.authorized_at,
        updated_at=row.updated_at,
        revoked_at=row.revoked_at,
    )


def _code_digest(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def _claim(row: AuthorizationCode) -> CodeClaim:
    return CodeClaim(
        state=row.state,  # type: ignore[arg-type]  # written only from CodeState
        platform_id=row.platform_id,
        authorizer_appid=row.authorizer_appid,
        errcode=row.errcode,
        problem=row.problem,
    )


class AuthorizationStore:
    """Authorization rows and the authorization codes already exchanged."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def _seal(self, platform_id: str, appid: str, refresh_token: str) -> str:
        return self._db.box.seal(refresh_token, context=f"refresh:{platform_id}:{appid}")

    async def for_authorizer(self, appid: str) -> list[StoredAuthorization]:
        """Every authorization ``appid`` granted, whatever its status (a Core read: routing's path)."""
        query = select(*_DESCRIBED).where(_AUTHORIZATIONS.c.authorizer_appid == appid)
        async with self._db.engine.connect() as conn:
            return [_describe(row) for row in await conn.execute(query)]

    async def get(self, platform_id: str, appid: str) -> StoredAuthorization | None:
        """One authorization, or None."""
        found = await self.get_with_refresh_token(platform_id, appid)
        return None if found is None else found[0]

    async def active(self, platform_id: str | None = None) -> list[StoredAuthorization]:
        """Active authorizations, of one platform or all."""
        query = select(Authorization).where(col(Authorization.status) == "active")
        if platform_id is not None:
            query = query.where(col(Authorization.platform_id) == platform_id)
        async with self._db.sessions() as session:
            return [_describe(row) for row in await session.scalars(query)]

    async def of_platform(self, platform_id: str) -> list[tuple[StoredAuthorization, str | None]]:
        """Every authorization of one platform, whatever its status, each with its refresh token opened
        (None when it was lost): one read for a whole catalog sync of the platform."""
        async with self._db.sessions() as session:
            rows = await session.scalars(
                select(Authorization).where(col(Authorization.platform_id) == platform_id)
            )
            return [
                (
                    _describe(row),
                    None
                    if row.refresh_token_sealed is None
                    else self._db.box.open(
                        row.refresh_token_sealed, context=f"refresh:{platform_id}:{row.authorizer_appid}"
                    ),
                )
                for row in rows
            ]

    async def refresh_token(self, platform_id: str, appid: str) -> str | None:
        """The stored refresh token of an authorization, opened."""
        found = await self.get_with_refresh_token(platform_id, appid)
        return None if found is None else found[1]

    async def get_with_refresh_token(
        self, platform_id: str, appid: str
    ) -> tuple[StoredAuthorization, str | None] | None:
        """One authorization with its refresh token opened (None when lost), in one read; None if none."""
        query = select(*_DESCRIBED, _AUTHORIZATIONS.c.refresh_token_sealed).where(
            _AUTHORIZATIONS.c.platform_id == platform_id, _AUTHORIZATIONS.c.authorizer_appid == appid
        )
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        if row.refresh_token_sealed is None:
            return _describe(row), None
        opened = self._db.box.open(row.refresh_token_sealed, context=f"refresh:{platform_id}:{appid}")
        return _describe(row), opened

    async def authorize(
        self, platform_id: str, appid: str, refresh_token: str, func_ids: frozenset[int]
    ) -> StoredAuthorization:
        """Record a (re-)authorization: active, with this refresh token and these permission sets."""
        return (await self.authorize_many([Grant(platform_id, appid, refresh_token, func_ids)]))[0]

    async def authorize_many(self, grants: Sequence[Grant]) -> list[StoredAuthorization]:
        """``authorize`` for many at once, in one transaction (a catalog sync's batches)."""
        now = self._db.clock()
        # Rows in key order (so are the entries refreshed): concurrent batches lock in one order.
        ordered = sorted(grants, key=lambda g: (g.platform_id, g.authorizer_appid))
        rows = [
            {
                "platform_id": g.platform_id,
                "authorizer_appid": g.authorizer_appid,
                "authorized_at": now,
                "refresh_token_sealed": self._seal(g.platform_id, g.authorizer_appid, g.refresh_token),
                "func_ids": ",".join(str(i) for i in sorted(g.func_ids)),
                "status": "active",
                "updated_at": now,
                "revoked_at": None,
            }
            for g in ordered
        ]
        if rows:
            insert = self._db.insert(_AUTHORIZATIONS)
            replaced = ("refresh_token_sealed", "func_ids", "status", "updated_at", "revoked_at")
            async with self._db.sessions.begin() as session:
                await session.execute(
                    insert.on_conflict_do_update(
                        index_elements=["platform_id", "authorizer_appid"],
                        set_={name: insert.excluded[name] for name in replaced},
                    ),
                    rows,
                )
                await refresh_entries(session, self._db, {g.authorizer_appid for g in grants})
        return [
            StoredAuthorization(g.platform_id, g.authorizer_appid, g.func_ids, "active", now, now, None)
            for g in grants
        ]

    async def set_refresh_token(self, platform_id: str, appid: str, refresh_token: str) -> None:
        """Keep the refresh token WeChat returned (it may change); reactivates a lost authorization."""
        async with self._db.sessions.begin() as session:
            await session.execute(
                update(Authorization)
                .where(
                    col(Authorization.platform_id) == platform_id,
                    col(Authorization.authorizer_appid) == appid,
                    col(Authorization.status) != "revoked",
                )
                .values(
                    refresh_token_sealed=self._seal(platform_id, appid, refresh_token),
                    status="active",
                    updated_at=self._db.clock(),
                )
            )
            await refresh_entries(session, self._db, [appid])

    async def set_status(self, platform_id: str, appid: str, status: AuthorizationStatus) -> None:
        """Mark an authorization revoked or needing re-authorization (kept for the catalog)."""
        now = self._db.clock()
        async with self._db.sessions.begin() as session:
            await session.execute(
                update(Authorization)
                .where(
                    col(Authorization.platform_id) == platform_id,
                    col(Authorization.authorizer_appid) == appid,
                )
                .values(status=status, updated_at=now, revoked_at=now if status == "revoked" else None)
            )
            await refresh_entries(session, self._db, [appid])

    async def code_claim(self, code: str) -> CodeClaim | None:
        """The row of an authorization code, or None when it never arrived."""
        async with self._db.sessions() as session:
            row = await session.get(AuthorizationCode, _code_digest(code))
            return None if row is None else _claim(row)

    async def claim_code(self, code: str, platform_id: str, owner: str, lease_s: float) -> CodeClaim:
        """Claim a code for its one api_query_auth: insert-if-absent, or take over a claim whose lease
        lapsed (its holder died or hung). The row as it stands, ``won`` when the claim is ``owner``'s."""
        digest = _code_digest(code)
        now = self._db.clock()
        claim = {"claim_owner": owner, "claim_until": now + lease_s}
        insert = self._db.insert(AuthorizationCode).values(
            code_sha256=digest, platform_id=platform_id, state="claimed", arrived_at=now, **claim
        )
        async with self._db.sessions.begin() as session:
            inserted = await session.execute(
                insert.on_conflict_do_nothing().returning(col(AuthorizationCode.code_sha256))
            )
            if inserted.scalar_one_or_none() is not None:
                return CodeClaim("claimed", platform_id, won=True)
            taken = await session.execute(
                update(AuthorizationCode)
                .where(
                    col(AuthorizationCode.code_sha256) == digest,
                    col(AuthorizationCode.state) == "claimed",
                    col(AuthorizationCode.claim_until) < now,
                )
                .values(**claim)
            )
            row = await session.get(AuthorizationCode, digest, populate_existing=True)
            if row is None:  # released between the two statements: the next poll inserts
                return CodeClaim("claimed", platform_id)
            won = taken.rowcount == 1  # type: ignore[attr-defined]  # a CursorResult
            return msgspec.structs.replace(_claim(row), won=won, resumed=won)

    async def code_exchanged(self, code: str, platform_id: str, appid: str) -> None:
        """The code was exchanged (by whoever holds it now: a holder whose claim lapsed still reports
        its success, which overrides a later claimant's 61009 or lost answer)."""
        await self._settle_code(
            code, None, state="exchanged", authorizer_appid=appid, exchanged_at=self._db.clock()
        )

    async def code_refused(self, code: str, owner: str, errcode: int, errmsg: str) -> None:
        """WeChat refused the code (61009/61010); an exchange recorded meanwhile stands."""
        await self._settle_code(code, owner, state="refused", errcode=errcode, problem=errmsg[:200])

    async def code_unknown(self, code: str, owner: str, reason: str) -> None:
        """The code was sent and its answer lost: it may be consumed, so it is never sent again."""
        await self._settle_code(code, owner, state="unknown", problem=reason[:200])

    async def release_code(self, code: str, owner: str) -> None:
        """Drop ``owner``'s claim: the code was provably not consumed (never sent, or refused for a
        reason that is not the code's), so the next arrival may exchange it."""
        async with self._db.sessions.begin() as session:
            await session.execute(
                delete(AuthorizationCode).where(
                    col(AuthorizationCode.code_sha256) == _code_digest(code),
                    col(AuthorizationCode.state) == "claimed",
                    col(AuthorizationCode.claim_owner) == owner,
                )
            )

    async def _settle_code(self, code: str, owner: str | None, **values: object) -> None:
        query = update(AuthorizationCode).where(
            col(AuthorizationCode.code_sha256) == _code_digest(code),
            col(AuthorizationCode.state) != "exchanged",
        )
        if owner is not None:
            query = query.where(col(AuthorizationCode.claim_owner) == owner)
        async with self._db.sessions.begin() as session:
            await session.execute(query.values(claim_owner=None, claim_until=None, **values))

    async def purge_codes(self, settled_before: float, exchanged_before: float, chunk: int = 5_000) -> int:
        """Delete code rows no arrival can need any more, ``chunk`` per transaction; how many went.

        Refused, unknown and lapsed claimed rows that arrived before ``settled_before``, and exchanged rows
        exchanged before ``exchanged_before`` (they answer a replayed code while it could still be sent)."""
        codes = col(AuthorizationCode.state)
        done = or_(
            and_(
                codes.in_(("refused", "unknown")),
                col(AuthorizationCode.arrived_at) < settled_before,
            ),
            and_(
                codes == "claimed",
                col(AuthorizationCode.arrived_at) < settled_before,
                col(AuthorizationCode.claim_until) < settled_before,  # its holder is long gone
            ),
            and_(codes == "exchanged", col(AuthorizationCode.exchanged_at) < exchanged_before),
        )
        oldest = select(col(AuthorizationCode.code_sha256)).where(done).limit(chunk)
        return await self._db.delete_in_chunks(
            delete(AuthorizationCode).where(col(AuthorizationCode.code_sha256).in_(oldest)), chunk
        )

    async def code_owner(self, code: str) -> tuple[str, str] | None:
        """(platform, authorizer) of an exchanged code, or None."""
        claim = await self.code_claim(code)
        if claim is None or claim.state != "exchanged" or claim.authorizer_appid is None:
            return None
        return claim.platform_id, claim.authorizer_appid

    async def save_profile(self, profile: Profile) -> Profile:
        """Keep what WeChat said of an account, stamped with now."""
        return (await self.save_profiles([profile]))[0]

    async def save_profiles(
        self, profiles: Sequence[Profile], bindings: Sequence[Binding] | None = None, *, read: bool = True
    ) -> list[Profile]:
        """``save_profile`` for many at once, in one transaction; with ``bindings`` (one per profile, in
        the same order) each account's binding is recorded with its profile (a catalog sync's batches),
        stamped as read now unless ``read`` is false (a state decided again from the stored binding)."""
        now = self._db.clock()
        stamped = [msgspec.structs.replace(p, synced_at=now) for p in profiles]
        rows = [msgspec.structs.asdict(p) for p in stamped]
        if bindings is not None:
            for row, binding in zip(rows, bindings, strict=True):
                row.update(
                    binding=binding.state, open_appid=binding.open_appid, binding_target=binding.target
                )
                if read:
                    row["binding_checked_at"] = now
        rows.sort(key=lambda row: str(row["authorizer_appid"]))  # one lock order for concurrent batches
        if rows:
            insert = self._db.insert(_PROFILES)
            async with self._db.sessions.begin() as session:
                await session.execute(
                    insert.on_conflict_do_update(
                        index_elements=["authorizer_appid"],
                        set_={name: insert.excluded[name] for name in rows[0] if name != "authorizer_appid"},
                    ),
                    rows,
                )
                await refresh_entries(session, self._db, {p.authorizer_appid for p in profiles})
        return stamped

    async def bindings_checked_at(self) -> dict[str, float | None]:
        """When each account's binding was last read, by appid (None: never); one read for a sync."""
        query = select(_PROFILES.c.authorizer_appid, _PROFILES.c.binding_checked_at)
        async with self._db.engine.connect() as conn:
            return {appid: checked for appid, checked in (await conn.execute(query)).all()}

    async def save_binding(
        self, appid: str, binding: str, open_appid: str | None, target: str | None = None
    ) -> None:
        """Record where ``appid`` is bound, and its §11 target (after its profile exists; a no-op
        otherwise)."""
        async with self._db.sessions.begin() as session:
            await session.execute(
                update(AuthorizerProfileRow)
                .where(col(AuthorizerProfileRow.authorizer_appid) == appid)
                .values(
                    binding=binding,
                    open_appid=open_appid,
                    binding_target=target,
                    binding_checked_at=self._db.clock(),
                )
            )
            await refresh_entries(session, self._db, [appid])

    async def binding_facts(self, binding: str | None = None) -> list[BindingFacts]:
        """Every profiled account's principal and last-seen binding (of one binding state, if given), in
        appid order: what the binding planner knows of the others (a Core read, a few columns)."""
        query = select(
            _PROFILES.c.authorizer_appid,
            _PROFILES.c.principal_name,
            _PROFILES.c.binding,
            _PROFILES.c.open_appid,
            _PROFILES.c.binding_target,
            _PROFILES.c.nick_name,
        ).order_by(_PROFILES.c.authorizer_appid)
        if binding is not None:
            query = query.where(_PROFILES.c.binding == binding)
        async with self._db.engine.connect() as conn:
            return [BindingFacts(*row) for row in await conn.execute(query)]

    async def profile(self, appid: str) -> Profile | None:
        """What WeChat last said of ``appid``, or None before any sync."""
        async with self._db.sessions() as session:
            row = await session.get(AuthorizerProfileRow, appid)
        if row is None:
            return None
        return Profile(
            row.authorizer_appid,
            row.kind,
            row.nick_name,
            row.principal_name,
            row.user_name,
            row.verify_type,
            row.service_type,
            row.account_status,
            row.synced_at,
        )

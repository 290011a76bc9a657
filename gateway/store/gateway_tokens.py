"""Gateway tokens: opaque tokens handed to SDKs in place of WeChat's, stored as sha-256 only."""

from __future__ import annotations

import hashlib

import msgspec
from sqlalchemy import delete, insert, update
from sqlmodel import col

from gateway.store.database import Database
from gateway.store.tables import GatewayToken

__all__ = ["GatewayTokenStore", "IssuedGatewayToken", "token_digest"]


def token_digest(token: str) -> str:
    """The sha-256 under which a gateway token is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


class IssuedGatewayToken(msgspec.Struct, frozen=True):
    """What a gateway token stands for."""

    client_id: str
    authorizer_appid: str
    issued_at: float
    expires_at: float
    revoked_at: float | None


class GatewayTokenStore:
    """Issue, resolve and revoke gateway tokens."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, token: str, client_id: str, authorizer_appid: str, lifetime_s: float) -> float:
        """Store a new token bound to (client, authorizer); returns its expiry."""
        now = self._db.clock()
        async with self._db.sessions.begin() as session:
            await session.execute(
                insert(GatewayToken).values(
                    token_sha256=token_digest(token),
                    client_id=client_id,
                    authorizer_appid=authorizer_appid,
                    issued_at=now,
                    expires_at=now + lifetime_s,
                )
            )
        return now + lifetime_s

    async def resolve(self, token: str) -> IssuedGatewayToken | None:
        """What ``token`` stands for, whatever its state (the caller judges expiry and revocation)."""
        async with self._db.sessions() as session:
            row = await session.get(GatewayToken, token_digest(token))
        if row is None:
            return None
        return IssuedGatewayToken(
            row.client_id, row.authorizer_appid, row.issued_at, row.expires_at, row.revoked_at
        )

    async def revoke(self, *, client_id: str, authorizer_appid: str | None = None) -> int:
        """Revoke a client's tokens (for one authorizer, or all); returns how many."""
        query = update(GatewayToken).where(
            col(GatewayToken.client_id) == client_id, col(GatewayToken.revoked_at).is_(None)
        )
        if authorizer_appid is not None:
            query = query.where(col(GatewayToken.authorizer_appid) == authorizer_appid)
        async with self._db.sessions.begin() as session:
            result = await session.execute(query.values(revoked_at=self._db.clock()))
            return int(result.rowcount)  # type: ignore[attr-defined]

    async def purge_expired(self, before: float) -> int:
        """Forget tokens that expired before ``before``."""
        async with self._db.sessions.begin() as session:
            result = await session.execute(delete(GatewayToken).where(col(GatewayToken.expires_at) < before))
            return int(result.rowcount)  # type: ignore[attr-defined]

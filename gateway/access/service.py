"""Internal apps: who is calling (bearer key), what they may do (scopes, authorizers), and token vending."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Generic, TypeVar

import msgspec

from gateway.access.ratelimit import RateLimiter
from gateway.authorizations.service import AuthorizationService
from gateway.credentials.tokens import Token, TokenService
from gateway.errors import Forbidden, InvalidInput, Unauthenticated
from gateway.registry.live import LiveRegistry, ReadsRegistry
from gateway.registry.model import Client, Registry, Scope
from gateway.store.audit_trail import AuditTrail
from gateway.xml import is_appid

__all__ = [
    "ACCESS_TOKEN",
    "JSAPI_TICKET",
    "STALE_MAX_LENGTH",
    "IssuedTicket",
    "IssuedToken",
    "TokenVending",
    "Vended",
    "authenticate",
    "require",
]


def authenticate(registry: Registry, authorization: str | None) -> Client:
    """The client whose key is in the ``Authorization: Bearer`` header; `Unauthenticated` otherwise.

    Only the key's sha-256 is compared (in constant time, by the registry), never the key itself.
    """
    if not authorization:
        raise Unauthenticated("an Authorization: Bearer <client key> header is required")
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <client key>'")
    client = registry.client_for_key_sha256(hashlib.sha256(key.strip().encode()).hexdigest())
    if client is None:
        raise Unauthenticated("the client key is not known")
    return client


def require(client: Client, scope: Scope, appid: str | None = None) -> None:
    """`Forbidden` unless ``client`` holds ``scope`` and may act for ``appid``.

    Checked before anything is looked up, so a refusal says nothing about whether the appid exists.
    """
    if scope not in client.scopes:
        raise Forbidden(f"client '{client.id}' does not hold the scope '{scope}'")
    if appid is not None and "*" not in client.authorizers and appid not in client.authorizers:
        raise Forbidden(f"client '{client.id}' may not act for this authorizer")
    if appid is not None and not is_appid(appid):
        raise InvalidInput("appid", "must be 'wx' followed by letters and digits")


# ``?stale=``: no longer than WeChat's own bound. Its access_token doc asks for 512 characters of storage
# ("access_token的存储至少要保留512个字符空间", cgi-bin/token); tickets are assumed to fit the same.
STALE_MAX_LENGTH = 512


def stale_report(raw: str | None) -> str | None:
    """A caller's ``?stale=`` value: None when absent or empty; `InvalidInput` naming ``stale`` (never
    echoing the value: it is a token) unless it has the shape of a token."""
    if not raw:
        return None
    if len(raw) > STALE_MAX_LENGTH or not (raw.isascii() and raw.isprintable()) or " " in raw:
        raise InvalidInput(
            "stale",
            f"must be the token or ticket WeChat refused, at most {STALE_MAX_LENGTH} printable ASCII "
            "characters",
        )
    return raw


class IssuedToken(msgspec.Struct, frozen=True):
    """``GET /v1/authorizers/{appid}/access-token``."""

    authorizer_appid: str
    platform: str
    access_token: str
    expires_at: int


class IssuedTicket(msgspec.Struct, frozen=True):
    """``GET /v1/authorizers/{appid}/jsapi-ticket``."""

    authorizer_appid: str
    platform: str
    ticket: str
    expires_at: int


Issued = TypeVar("Issued", IssuedToken, IssuedTicket)


@dataclass(frozen=True)
class Vended(Generic[Issued]):
    """One of the two things vended: its credential kind, audit action and answer."""

    kind: str
    action: str
    answer: type[Issued]


ACCESS_TOKEN = Vended("authorizer", "token.issued", IssuedToken)
JSAPI_TICKET = Vended("jsapi", "jsapi_ticket.issued", IssuedTicket)


class TokenVending(ReadsRegistry):
    """Hands authorizer tokens and JS-SDK tickets to internal apps, each one audited."""

    def __init__(
        self,
        registry: LiveRegistry,
        authorizations: AuthorizationService,
        tokens: TokenService,
        audit: AuditTrail,
        limiter: RateLimiter,
    ) -> None:
        self._live = registry
        self._authorizations = authorizations
        self._tokens = tokens
        self._audit = audit
        self._limiter = limiter

    async def authenticate(self, authorization: str | None) -> Client:
        """The calling client (see ``authenticate``), admitted by its rate limit (`RateLimited` past it).

        Every ``/v1`` route comes through here, so that each request is counted once, before any work.
        """
        client = authenticate(self._registry, authorization)
        await self._limiter.admit(client)
        return client

    async def access_token(self, client: Client, appid: str, *, stale: str | None = None) -> IssuedToken:
        """The authorizer_access_token of ``appid`` through the platform routing picks; ``stale``: the
        caller's ``?stale=`` (see `issue`)."""
        return await self.issue(client, appid, ACCESS_TOKEN, stale=stale)

    async def jsapi_ticket(self, client: Client, appid: str, *, stale: str | None = None) -> IssuedTicket:
        """The JS-SDK ticket of ``appid``; ``stale``: the caller's ``?stale=`` (see `issue`)."""
        return await self.issue(client, appid, JSAPI_TICKET, stale=stale)

    async def issue(
        self, client: Client, appid: str, what: Vended[Issued], *, stale: str | None = None
    ) -> Issued:
        """``what`` for ``appid``: routed, obtained (from memory, the store or WeChat), audited. The
        caller has checked that ``client`` may (the ``/v1`` guard: `require`).

        ``stale``: a value WeChat refused as stale (40001/40014/42001), as the caller sent it (refused
        unless shaped like a token); renewed if it is still the stored one, else the stored one is answered.
        """
        reported = stale_report(stale)
        platform_id = await self._authorizations.route(appid, None)
        if what.kind == ACCESS_TOKEN.kind:
            token = await self._tokens.authorizer_token(platform_id, appid, stale=reported)
        elif what.kind == JSAPI_TICKET.kind:
            token = await self._tokens.jsapi_ticket(platform_id, appid, stale=reported)
        else:
            raise ValueError(f"nothing vended is of kind {what.kind!r}")
        return self._issued(client, appid, what, token)

    def _issued(self, client: Client, appid: str, what: Vended[Issued], token: Token) -> Issued:
        self._audit.record(client.id, what.action, platform_id=token.platform_id, authorizer_appid=appid)
        return what.answer(appid, token.platform_id, token.value, int(token.expires_at))

"""Internal apps: who is calling (bearer key), what they may do (scopes, authorizers), and token vending."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable

import msgspec

from gateway.audit import AuditTrail
from gateway.authorizations import AuthorizationService
from gateway.errors import ApiError
from gateway.events import is_appid
from gateway.live_registry import LiveRegistry, ReadsRegistry
from gateway.ratelimit import RateLimiter
from gateway.registry import Client, Registry, Scope
from gateway.tokens import Token, TokenService

__all__ = ["IssuedTicket", "IssuedToken", "TokenVending", "authenticate", "require"]


def authenticate(registry: Registry, authorization: str | None) -> Client:
    """The client whose key is in the ``Authorization: Bearer`` header; 401 otherwise.

    Only the key's sha-256 is compared (in constant time, by the registry), never the key itself.
    """
    if not authorization:
        raise ApiError(401, "unauthenticated", "an Authorization: Bearer <client key> header is required")
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(401, "unauthenticated", "the Authorization header must be 'Bearer <client key>'")
    client = registry.client_for_key_sha256(hashlib.sha256(key.strip().encode()).hexdigest())
    if client is None:
        raise ApiError(401, "unauthenticated", "the client key is not known")
    return client


def require(client: Client, scope: Scope, appid: str | None = None) -> None:
    """403 unless ``client`` holds ``scope`` and may act for ``appid``.

    Checked before anything is looked up, so a refusal says nothing about whether the appid exists.
    """
    if scope not in client.scopes:
        raise ApiError(403, "forbidden", f"client '{client.id}' does not hold the scope '{scope}'")
    if appid is not None and "*" not in client.authorizers and appid not in client.authorizers:
        raise ApiError(403, "forbidden", f"client '{client.id}' may not act for this authorizer")
    if appid is not None and not is_appid(appid):
        raise ApiError(422, "invalid_request", "appid: must be 'wx' followed by letters and digits")


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

    async def access_token(self, client: Client, appid: str) -> IssuedToken:
        """The authorizer_access_token of ``appid`` through the platform routing picks."""
        token = await self._issue(client, appid, "token.issued", self._tokens.authorizer_token)
        return IssuedToken(appid, token.platform_id, token.value, int(token.expires_at))

    async def jsapi_ticket(self, client: Client, appid: str) -> IssuedTicket:
        """The JS-SDK ticket of ``appid``."""
        token = await self._issue(client, appid, "jsapi_ticket.issued", self._tokens.jsapi_ticket)
        return IssuedTicket(appid, token.platform_id, token.value, int(token.expires_at))

    async def _issue(
        self, client: Client, appid: str, action: str, get: Callable[[str, str], Awaitable[Token]]
    ) -> Token:
        require(client, "token", appid)
        platform_id = await self._authorizations.route(appid, None)
        token = await get(platform_id, appid)
        self._audit.record(client.id, action, platform_id=platform_id, authorizer_appid=appid)
        return token

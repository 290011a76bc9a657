"""Signing in to the auditors' pages: Litestar's server-side sessions and its CSRF middleware.

An auditor signs in with a client key that holds the ``catalog`` scope.

- Sessions (`auditor_sessions`): Litestar's ``ServerSideSessionConfig`` over the database (`SessionStore`,
  a Litestar ``Store`` on ``gateway.store.web_sessions``), so every replica knows every session and signing
  out on one ends it on all. The browser keeps a random session id in an HttpOnly cookie; the table keeps
  its sha-256 and the session: the client and when it ends (``SESSION_LIFETIME_S`` after signing in,
  however active). Each request checks again that the client is still in the registry and still holds
  ``catalog``: taking a key or a scope out of the registry ends its sessions. A sign-in always gets a
  new session id (an id planted in the browser before opens nothing), and a session with nothing in it is
  never stored: visitors who do not sign in leave no row.
- CSRF (`form_protection`): Litestar's double-submit middleware. A signed random token is both in a
  cookie of its own (HttpOnly, SameSite=Strict, sent to the pages only) and in every form; a POST without
  the pair is refused with 403 before its handler runs. Another site can make a browser post a form but
  can neither read nor set that cookie. The signing secret is derived from ``GATEWAY_SECRET_KEY``.

Both are middleware of the pages only: the API routes never carry a session or a form.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import msgspec
from litestar.config.csrf import CSRFConfig
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie, MutableScopeHeaders
from litestar.middleware import DefineMiddleware
from litestar.middleware.csrf import CSRFMiddleware
from litestar.middleware.session.server_side import ServerSideSessionBackend, ServerSideSessionConfig
from litestar.stores.base import Store
from litestar.types import Message, ScopeSession
from litestar.utils.dataclass import extract_dataclass_items

from gateway.errors import Forbidden, Unauthenticated
from gateway.registry.live import LiveRegistry, ReadsRegistry
from gateway.store.web_sessions import WebSessionStore

__all__ = [
    "CSRF_COOKIE",
    "SESSION_COOKIE",
    "SESSION_LIFETIME_S",
    "SESSION_STORE",
    "Auditor",
    "SessionStore",
    "WebSessions",
    "auditor_sessions",
    "form_protection",
]

SESSION_COOKIE = "gw_session"
CSRF_COOKIE = "gw_csrf"
SESSION_STORE = "web_sessions"
"""The name under which `create_app` registers the database `Store` the sessions are kept in."""
SESSION_LIFETIME_S = 8 * 3600
PAGES_PATH = "/catalog"
_SIGNED_IN_AT = "signed_in_at"
_LOADED = "gateway.session_signed_in_at"  # the connection state's note of the session the request came with


class Auditor(msgspec.Struct, frozen=True):
    """A signed-in auditor: the client whose key was given, and when the session ends."""

    client_id: str
    expires_at: float


class WebSessions(ReadsRegistry):
    """Signs auditors in, and recognises them in their session."""

    def __init__(self, registry: LiveRegistry, *, clock: Callable[[], float] = time.time) -> None:
        self._live = registry
        self._clock = clock

    def sign_in(self, key: str) -> dict[str, Any]:
        """The session of the client whose key this is.

        A key that is unknown is refused with one message whatever is wrong with it; a known key without
        the ``catalog`` scope is told so.
        """
        key = key.strip()
        client = (
            self._registry.client_for_key_sha256(hashlib.sha256(key.encode()).hexdigest()) if key else None
        )
        if client is None:
            raise Unauthenticated("This key was not accepted. Check it and try again.")
        if "catalog" not in client.scopes:
            raise Forbidden("This key does not open the catalog: it lacks the scope 'catalog'.")
        now = self._clock()
        return {"client_id": client.id, _SIGNED_IN_AT: now, "expires_at": now + SESSION_LIFETIME_S}

    def auditor(self, session: Mapping[str, Any]) -> Auditor | None:
        """The auditor of a live session, or None (no session, ended, or its client has since lost its
        key or its scope in the registry)."""
        client_id, expires_at = session.get("client_id"), session.get("expires_at")
        if not isinstance(client_id, str) or not isinstance(expires_at, int | float):
            return None
        client = self._registry.client(client_id)
        if expires_at <= self._clock() or client is None or "catalog" not in client.scopes:
            return None
        return Auditor(client.id, float(expires_at))


def _seconds(value: int | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class SessionStore(Store):
    """Litestar's ``Store`` over the database's table of sessions, which keeps only each id's sha-256."""

    def __init__(self, table: WebSessionStore) -> None:
        self._table = table

    async def set(self, key: str, value: str | bytes, expires_in: int | timedelta | None = None) -> None:
        data = value.encode() if isinstance(value, str) else value
        await self._table.set(key, data, math.inf if expires_in is None else _seconds(expires_in))

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        return await self._table.get(key, None if renew_for is None else _seconds(renew_for))

    async def delete(self, key: str) -> None:
        await self._table.delete(key)

    async def delete_all(self) -> None:
        await self._table.delete_all()

    async def exists(self, key: str) -> bool:
        return await self._table.get(key) is not None

    async def expires_in(self, key: str) -> int | None:
        return await self._table.expires_in(key)


class _AuditorSessionBackend(ServerSideSessionBackend):
    """Litestar's server-side sessions, written only when a sign-in or a sign-out changes them.

    A new sign-in gets a new session id and ends the session the browser came with; a session emptied
    (signed out, or no longer valid) is deleted and its cookie forgotten; any other answer writes nothing
    and sets no cookie.
    """

    async def load_from_connection(self, connection: ASGIConnection[Any, Any, Any, Any]) -> dict[str, Any]:
        session = await super().load_from_connection(connection)
        connection.state[_LOADED] = session.get(_SIGNED_IN_AT)
        return session

    async def store_in_message(
        self, scope_session: ScopeSession, message: Message, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> None:
        signed_in_at = scope_session.get(_SIGNED_IN_AT) if isinstance(scope_session, dict) else None
        if signed_in_at == connection.state.get(_LOADED):
            return
        store = self.config.get_store_from_app(connection.scope["app"])
        headers = MutableScopeHeaders.from_message(message)
        cookie = dict(extract_dataclass_items(self.config, exclude_none=True, include=Cookie.__dict__.keys()))
        came_with = connection.cookies.get(self.config.key)
        if came_with:
            await self.delete(came_with, store)
        if not isinstance(scope_session, dict) or signed_in_at is None:
            if came_with:
                forget = Cookie(key=self.config.key, value="null", expires=0, **cookie)
                headers.add("Set-Cookie", forget.to_header(header=""))
            return
        session_id = self.generate_session_id()
        await self.set(session_id, self.serialize_data(scope_session, connection.scope), store)
        headers.add(
            "Set-Cookie", Cookie(key=self.config.key, value=session_id, **cookie).to_header(header="")
        )


@dataclass
class _AuditorSessionConfig(ServerSideSessionConfig):
    _backend_class = _AuditorSessionBackend


def auditor_sessions(*, secure: bool) -> DefineMiddleware:
    """The session middleware of the pages; ``secure``: the gateway's public URL is https."""
    config = _AuditorSessionConfig(
        key=SESSION_COOKIE,
        max_age=SESSION_LIFETIME_S,
        path=PAGES_PATH,
        httponly=True,
        secure=secure,
        samesite="lax",
        store=SESSION_STORE,
    )
    return config.middleware


def form_protection(secret: bytes, *, secure: bool) -> DefineMiddleware:
    """The CSRF middleware of the pages' forms, signing its tokens with ``secret``."""
    config = CSRFConfig(
        secret=secret.hex(),
        cookie_name=CSRF_COOKIE,
        cookie_path=PAGES_PATH,
        cookie_secure=secure,
        cookie_httponly=True,  # the pages carry the token in their forms, and run no script
        cookie_samesite="strict",
    )
    return DefineMiddleware(CSRFMiddleware, config=config)

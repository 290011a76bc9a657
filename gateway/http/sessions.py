"""Signing in to the auditors' pages: sessions kept in the database, and the CSRF tokens of their forms.

An auditor signs in with a client key that holds the ``catalog`` scope. The browser then keeps a random
session token in an HttpOnly cookie; the database keeps only its sha-256, with the client and the end of
the session (``SESSION_LIFETIME_S`` after signing in), so every replica knows every session and signing
out on one ends it on all. Each request checks again that the client is still in the registry and still
holds ``catalog``: taking a key or a scope out of the registry ends its sessions.

Every form is protected against requests forged by other sites:

- the login form by a double-submit token: a random value both in a short-lived cookie of its own
  (HttpOnly, SameSite=Strict, sent to the login path only) and in a hidden field, compared on submit.
  Another site can make a browser post the form but can neither read nor set that cookie;
- the forms of a signed-in auditor (sign out) by the session's CSRF token, an HMAC of the session token:
  stable for the session, shown in the page, and impossible to compute without the HttpOnly cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

import msgspec

from gateway.errors import Forbidden, Unauthenticated
from gateway.registry.live import LiveRegistry, ReadsRegistry
from gateway.store.web_sessions import WebSessionStore

__all__ = [
    "LOGIN_COOKIE",
    "LOGIN_FORM_LIFETIME_S",
    "SESSION_COOKIE",
    "SESSION_LIFETIME_S",
    "Auditor",
    "WebSessions",
]

SESSION_COOKIE = "gw_session"
LOGIN_COOKIE = "gw_login"
SESSION_LIFETIME_S = 8 * 3600
LOGIN_FORM_LIFETIME_S = 3600
_MAX_TOKEN = 128  # longer cookie or form values are refused before any hashing or lookup


class Auditor(msgspec.Struct, frozen=True):
    """A signed-in auditor: the client whose key was given, the session's CSRF token, its end."""

    client_id: str
    csrf_token: str
    expires_at: float


class WebSessions(ReadsRegistry):
    """Signs auditors in and out, and recognises their sessions."""

    def __init__(
        self,
        registry: LiveRegistry,
        store: WebSessionStore,
        *,
        secure_cookies: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._live = registry
        self._store = store
        self._clock = clock
        self.secure_cookies = secure_cookies
        """Whether cookies are marked Secure (the gateway's public URL is https)."""

    @staticmethod
    def new_login_token() -> str:
        """A fresh double-submit token for the login form and its cookie."""
        return secrets.token_urlsafe(32)

    @staticmethod
    def check_login_token(cookie: str | None, submitted: str | None) -> None:
        """403 unless the login form came back with the token its own cookie holds."""
        if not cookie or not submitted or len(submitted) > _MAX_TOKEN:
            raise Forbidden("The sign-in form has expired. Load it again and retry.")
        if not hmac.compare_digest(cookie.encode(), submitted.encode()):
            raise Forbidden("The sign-in form has expired. Load it again and retry.")

    async def login(self, key: str) -> tuple[str, Auditor]:
        """Open a session for the client whose key this is: its token (for the cookie) and the auditor.

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
        await self._store.purge_expired(self._clock())
        token = secrets.token_urlsafe(32)
        stored = await self._store.add(token, client.id, SESSION_LIFETIME_S)
        return token, Auditor(client.id, _csrf_token(token), stored.expires_at)

    async def resolve(self, token: str | None) -> Auditor | None:
        """The auditor of a live session, or None (no cookie, unknown, ended, expired, or the client has
        since lost its key or its scope in the registry)."""
        if not token or len(token) > _MAX_TOKEN:
            return None
        stored = await self._store.get(token)
        if stored is None:
            return None
        client = self._registry.client(stored.client_id)
        if stored.expires_at <= self._clock() or client is None or "catalog" not in client.scopes:
            await self._store.delete(token)
            return None
        return Auditor(client.id, _csrf_token(token), stored.expires_at)

    async def logout(self, token: str | None, submitted_csrf: str | None) -> None:
        """End the session of ``token``; 403 unless the form carried the session's CSRF token.

        Without a session there is nothing to end and nothing to forge.
        """
        if not token or len(token) > _MAX_TOKEN:
            return
        expected = _csrf_token(token).encode()
        if not submitted_csrf or not hmac.compare_digest(expected, submitted_csrf.encode()):
            raise Forbidden("The sign-out form has expired. Load the page again and retry.")
        await self._store.delete(token)

    async def end(self, token: str | None) -> None:
        """End the session of ``token`` if there is one (a new sign-in replaces the old session)."""
        if token and len(token) <= _MAX_TOKEN:
            await self._store.delete(token)


def _csrf_token(session_token: str) -> str:
    return hmac.new(session_token.encode(), b"gateway catalog csrf v1", hashlib.sha256).hexdigest()

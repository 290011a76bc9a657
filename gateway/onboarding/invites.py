"""Invites to the authorization start page (SPEC §4): signed, long-lived, and carrying no pre_auth_code.

WeChat opens its authorization page only when the browser comes from a page on the component's
授权发起页域名, and a pre_auth_code lives minutes and is used once (wechat-protocol.md §10). So what an
administrator gets by mail or chat is an invite to the gateway's own start page, which mints the code
when it loads. An invite is ``<payload>.<signature>``, both base64url: the payload is the JSON of
`Invite`, the signature HMAC-SHA256 over it under a key derived from ``GATEWAY_SECRET_KEY``
(`SecretBox.derive`), so an invite signed before a key rotation verifies while the old key is still
listed in ``GATEWAY_PREVIOUS_SECRET_KEYS``. Nothing is stored: the signature is the whole proof.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Literal

import msgspec

__all__ = [
    "DEFAULT_INVITE_VALID_S",
    "INVITE_KEY_PURPOSE",
    "MAX_INVITE_VALID_S",
    "MIN_INVITE_VALID_S",
    "Invite",
    "InviteRefused",
    "InviteSigner",
]

INVITE_KEY_PURPOSE = "onboarding invite"
DEFAULT_INVITE_VALID_S = 7 * 86400
MAX_INVITE_VALID_S = 30 * 86400
MIN_INVITE_VALID_S = 60
_MAX_TOKEN_CHARS = 4096  # an invite is a few hundred characters; anything longer is not one of ours


class Invite(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """What the start page will ask WeChat for. ``id`` names the invite in the audit log."""

    id: str
    platform: str
    auth_type: int
    expires_at: int  # Unix seconds
    biz_appid: str | None = None
    category_ids: tuple[int, ...] = ()
    redirect_uri: str | None = None


class InviteRefused(Exception):
    """An invite the start page will not honour: ``reason`` says why, ``message`` in words for the page."""

    def __init__(self, reason: Literal["malformed", "tampered", "expired"], message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class InviteSigner:
    """Signs invites under the first key and verifies them under any (the current key, then previous ones)."""

    def __init__(self, keys: Sequence[bytes], *, clock: Callable[[], float] = time.time) -> None:
        if not keys:
            raise ValueError("an invite signer needs at least one key")
        self._keys = list(keys)
        self._clock = clock

    def new(
        self,
        platform: str,
        auth_type: int,
        valid_s: int,
        *,
        biz_appid: str | None = None,
        category_ids: Sequence[int] = (),
        redirect_uri: str | None = None,
    ) -> tuple[Invite, str]:
        """A fresh invite valid ``valid_s`` from now, and its signed form."""
        invite = Invite(
            id=secrets.token_hex(8),
            platform=platform,
            auth_type=auth_type,
            expires_at=int(self._clock()) + valid_s,
            biz_appid=biz_appid,
            category_ids=tuple(category_ids),
            redirect_uri=redirect_uri,
        )
        return invite, self.sign(invite)

    def sign(self, invite: Invite) -> str:
        """The invite's signed form, safe in a URL's query as it is."""
        payload = msgspec.json.encode(invite)
        return f"{_b64(payload)}.{_b64(_mac(self._keys[0], payload))}"

    def verify(self, token: str) -> Invite:
        """The invite ``token`` carries; InviteRefused when it is not one, was altered or signed under a key
        this gateway does not hold, or has expired."""
        if not token or len(token) > _MAX_TOKEN_CHARS or token.count(".") != 1:
            raise InviteRefused("malformed", "This is not a complete invite link.")
        encoded_payload, encoded_mac = token.split(".")
        try:
            payload, mac = _unb64(encoded_payload), _unb64(encoded_mac)
        except (binascii.Error, ValueError):
            raise InviteRefused("malformed", "This is not a complete invite link.") from None
        if not any(hmac.compare_digest(_mac(key, payload), mac) for key in self._keys):
            raise InviteRefused(
                "tampered",
                "This invite link is not valid: it was changed after it was made, "
                "or it was not made by this gateway.",
            )
        try:
            invite = msgspec.json.decode(payload, type=Invite)
        except msgspec.DecodeError:
            # Signed by us yet unreadable: an invite of another version of the gateway.
            raise InviteRefused(
                "malformed", "This invite link is of a form this gateway does not read."
            ) from None
        if self._clock() >= invite.expires_at:
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(invite.expires_at))
            raise InviteRefused("expired", f"This invite link expired on {when}.")
        return invite


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not text or not text.isascii():
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

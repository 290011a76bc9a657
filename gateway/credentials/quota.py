"""Clearing WeChat's daily API quota (clear_quota, protocol §3): an administrator's decision, never the
gateway's own.

WeChat allows ten clears per account per month, so nothing here retries or clears automatically. A clear
that WeChat accepts lifts the gateway's 45009 breaker for what the account's quota blocked: for the
component, its own token and the authorizer tokens it fetches; for an authorizer, that authorizer's
tokens and tickets.
"""

from __future__ import annotations

import msgspec

from gateway.errors import (
    AuthorizerUnknown,
    InvalidInput,
    PlatformUnknown,
    QuotaClearsUsedUp,
    UpstreamError,
    UpstreamUnavailable,
    WeChatRefused,
    WeChatUnavailable,
)
from gateway.registry.live import LiveRegistry, ReadsRegistry
from gateway.store.audit_trail import AuditTrail
from gateway.store.credentials import CredentialStore
from gateway.wechat.client import WeChatClient
from gateway.xml import is_appid

__all__ = ["QuotaCleared", "QuotaClearing"]

CLEARS_USED_UP = 48006
WRONG_APPID = 40013


class QuotaCleared(msgspec.Struct, frozen=True):
    """What was cleared: the platform's own quota (``authorizer_appid`` null) or an authorizer's."""

    platform: str
    authorizer_appid: str | None
    cleared: bool = True


class QuotaClearing(ReadsRegistry):
    """Clears a component's or an authorizer's quota through WeChat and lifts the matching breakers."""

    def __init__(
        self, registry: LiveRegistry, wechat: WeChatClient, credentials: CredentialStore, audit: AuditTrail
    ) -> None:
        self._live = registry
        self._wechat = wechat
        self._credentials = credentials
        self._audit = audit

    async def clear(self, platform_id: str, authorizer_appid: str | None, *, actor: str) -> QuotaCleared:
        """Clear one quota (``authorizer_appid`` None: the platform's own); audited either way."""
        platform = self._registry.platform(platform_id)
        if platform is None:
            raise PlatformUnknown(platform_id)
        if authorizer_appid is not None and not is_appid(authorizer_appid):
            raise InvalidInput("authorizer_appid", "must be 'wx' followed by letters and digits")
        whose = authorizer_appid or "the platform"
        try:
            await self._wechat.clear_quota(
                platform.component_appid,
                platform.component_appsecret.reveal(),
                authorizer_appid,
                platform_id=platform.id,
            )
        except UpstreamError as exc:
            self._audit.record(
                actor,
                "quota_clear_refused",
                platform_id=platform.id,
                authorizer_appid=authorizer_appid,
                detail=f"errcode {exc.errcode}",
            )
            if exc.errcode == CLEARS_USED_UP:
                raise QuotaClearsUsedUp(
                    f"WeChat allows ten quota clears a month per account; {whose} has used them (48006)",
                ) from None
            if exc.errcode == WRONG_APPID:
                raise AuthorizerUnknown(
                    authorizer_appid, f"{whose} has not authorized platform '{platform.id}' (40013)"
                ) from None
            raise WeChatRefused(f"WeChat refused the clear: {exc}") from None
        except UpstreamUnavailable as exc:
            raise WeChatUnavailable(str(exc)) from None
        if authorizer_appid is None:
            await self._credentials.unblock(f"component:{platform.id}", prefix=f"authorizer:{platform.id}:")
        else:
            await self._credentials.unblock(
                f"authorizer:{platform.id}:{authorizer_appid}", f"jsapi:{platform.id}:{authorizer_appid}"
            )
        self._audit.record(actor, "quota_cleared", platform_id=platform.id, authorizer_appid=authorizer_appid)
        return QuotaCleared(platform.id, authorizer_appid)

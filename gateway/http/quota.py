"""Clearing WeChat's daily quota, for administrators (scope ``admin``)."""

from __future__ import annotations

import msgspec
from litestar import Controller, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from gateway.credentials.quota import QuotaCleared, QuotaClearing
from gateway.http.guards import CLIENT_KEY, Requires
from gateway.http.openapi import V1_ERRORS
from gateway.registry.model import Client

__all__ = ["ClearQuotaRequest", "QuotaController"]


class ClearQuotaRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Whose quota: an authorizer's, or (null) the platform's own."""

    authorizer_appid: str | None = None


class QuotaController(Controller):
    """``clear_quota`` on an administrator's word; WeChat allows ten a month per account."""

    path = "/v1/platforms"
    tags = ["admin"]
    guards = [Requires("admin")]
    security = CLIENT_KEY

    @post(
        "/{platform:str}/clear-quota",
        status_code=200,
        summary="Clear WeChat's daily API quota",
        responses=V1_ERRORS,
    )
    async def clear_quota(
        self,
        platform: FromPath[str],
        client: NamedDependency[Client],
        quota: NamedDependency[QuotaClearing],
        data: JSONBody[ClearQuotaRequest | None] = None,
    ) -> QuotaCleared:
        """Clear the platform's own quota, or ``authorizer_appid``'s; lifts the gateway's 45009 breaker
        for it. Audited; never done automatically."""
        appid = data.authorizer_appid if data is not None else None
        return await quota.clear(platform, appid, actor=client.id)

"""WeChat-facing endpoints: the authorization event URL, per platform and in its single-URL form."""

from __future__ import annotations

import time
from typing import Any

from litestar import Controller, MediaType, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Template

from gateway.callbacks.intake import MAX_PUSH_BYTES, EventIntake
from gateway.http.openapi import PUSH_ERRORS
from gateway.onboarding.service import Onboarding

__all__ = ["START_PAGE_HEADERS", "WeChatEventsController"]

# WeChat reads the Referer of the browser arriving at its authorization page: the policy keeps this
# page's origin (never its path and query, which hold the invite) on the way out, and never drops it.
START_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def _utc(at: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))


class WeChatEventsController(Controller):
    """Pushes from WeChat, authenticated by their signature rather than a client key."""

    path = "/wechat"
    tags = ["wechat"]

    @post(
        "/{platform:str}/events",
        status_code=200,
        media_type=MediaType.TEXT,
        request_max_body_size=MAX_PUSH_BYTES,
        summary="Authorization event URL of one platform",
        responses=PUSH_ERRORS,
    )
    async def platform_events(
        self, platform: FromPath[str], request: Request[Any, Any, Any], intake: NamedDependency[EventIntake]
    ) -> str:
        """Verify, decrypt and record a push; answer ``success`` as WeChat expects."""
        await intake.receive(platform, request.query_params, await request.body())
        return "success"

    @post(
        "/events",
        status_code=200,
        media_type=MediaType.TEXT,
        request_max_body_size=MAX_PUSH_BYTES,
        summary="Authorization event URL shared by every platform",
        responses=PUSH_ERRORS,
    )
    async def shared_events(
        self, request: Request[Any, Any, Any], intake: NamedDependency[EventIntake]
    ) -> str:
        """As the per-platform URL, the platform found by the envelope's plain ``AppId``."""
        await intake.receive(None, request.query_params, await request.body())
        return "success"

    @get(
        "/{platform:str}/authorize",
        media_type=MediaType.HTML,
        cache=False,
        summary="Authorization start page (授权发起页)",
    )
    async def authorize(
        self,
        platform: FromPath[str],
        request: Request[Any, Any, Any],
        onboarding: NamedDependency[Onboarding],
    ) -> Template:
        """An invite's start page: a fresh pre-auth code and WeChat's authorization page linked from here,
        so the browser arrives there with this origin as Referer."""
        page = await onboarding.start_page(platform, request.query_params.get("invite"))
        context = {
            "title": page.title,
            "page": page,
            "expires": _utc(page.links.expires_at) if page.links else None,
        }
        return Template(
            "authorize.html", context=context, status_code=page.status, headers=START_PAGE_HEADERS
        )

    @get(
        "/{platform:str}/authorized",
        media_type=MediaType.HTML,
        cache=False,
        summary="Redirect after authorizing",
    )
    async def authorized(
        self,
        platform: FromPath[str],
        request: Request[Any, Any, Any],
        onboarding: NamedDependency[Onboarding],
    ) -> Template:
        """Where WeChat sends the administrator back: the code is exchanged and the outcome shown."""
        page = await onboarding.redirect_page(platform, request.query_params.get("auth_code"))
        context = {
            "title": page.title,
            "authorized": page.authorized,
            "problem": page.problem,
            "remedy": page.remedy,
            "kinds": {"official_account": "official account", "mini_program": "mini program"},
        }
        return Template("authorized.html", context=context, status_code=page.status)

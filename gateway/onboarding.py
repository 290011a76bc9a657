"""Onboarding: authorization links for administrators, and the redirect that brings them back.

A link carries a fresh, single-use pre-auth code. After the administrator approves, WeChat sends the
browser to the redirect URI with ``auth_code``; the same code also arrives in the ``authorized`` event,
and whichever comes first claims and exchanges it (``AuthorizationService.exchange_code``), the other
waiting for that outcome and showing it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import quote, urlencode, urlsplit

import msgspec

from gateway.audit import AuditTrail
from gateway.authorizations import AuthorizationService
from gateway.errors import ApiError, OutcomeUnknown, UpstreamError, UpstreamUnavailable
from gateway.events import is_appid
from gateway.live_registry import LiveRegistry, ReadsRegistry
from gateway.registry import Platform
from gateway.routing import MINI_PROGRAM_SETS, OFFICIAL_ACCOUNT_SETS, PERMISSION_SET_NAMES
from gateway.store import Store
from gateway.tokens import TokenService
from gateway.wechat import WeChatClient

__all__ = ["AuthorizationLinks", "Authorized", "LinkRequest", "Onboarding", "RedirectPage"]

PC_PAGE = "https://mp.weixin.qq.com/cgi-bin/componentloginpage"
H5_PAGE = "https://open.weixin.qq.com/wxaopen/safe/bindcomponent"
H5_PAGE_LEGACY = "https://mp.weixin.qq.com/safe/bindcomponent"
AUTH_TYPES = {1: "official accounts only", 2: "mini programs only", 3: "official accounts and mini programs"}
CODE_REFUSED = frozenset({61009, 61010})


class LinkRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/platforms/{platform}/authorization-links``."""

    auth_type: int = 3
    biz_appid: str | None = None
    category_ids: list[int] | None = None
    redirect_uri: str | None = None


class AuthorizationLinks(msgspec.Struct, frozen=True):
    """The links to send an administrator, valid until ``expires_at`` (Unix seconds), usable once."""

    pc_url: str
    h5_url: str
    h5_url_legacy: str
    expires_at: int


class Authorized(msgspec.Struct, frozen=True):
    """What the redirect page says: which account authorized which platform with which sets."""

    platform_id: str
    platform_name: str
    authorizer_appid: str
    name: str
    kind: str
    permission_sets: list[str]


class RedirectPage(msgspec.Struct, frozen=True):
    """What the redirect page shows: the authorization, or the problem and a fresh link."""

    status: int
    title: str
    authorized: Authorized | None = None
    problem: str | None = None
    link: AuthorizationLinks | None = None


class Onboarding(ReadsRegistry):
    """Makes authorization links and completes authorizations from the redirect."""

    def __init__(
        self,
        registry: LiveRegistry,
        public_url: str,
        store: Store,
        tokens: TokenService,
        wechat: WeChatClient,
        authorizations: AuthorizationService,
        audit: AuditTrail,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._live = registry
        self._public_url = public_url.rstrip("/")
        self._store = store
        self._tokens = tokens
        self._wechat = wechat
        self._authorizations = authorizations
        self._audit = audit
        self._clock = clock

    def default_redirect(self, platform_id: str) -> str:
        """Where WeChat sends the administrator back to by default."""
        return f"{self._public_url}/wechat/{platform_id}/authorized"

    async def create_link(self, actor: str, platform_id: str, request: LinkRequest) -> AuthorizationLinks:
        """A fresh pre-auth code and the PC and H5 links built on it; 422 naming a bad field."""
        platform = self._platform(platform_id)
        redirect_uri = self._validated(platform_id, request)
        component = await self._tokens.component_token(platform_id)
        try:
            code, expires_in = await self._wechat.create_pre_auth_code(
                component.value, platform.component_appid
            )
        except UpstreamError as exc:
            raise ApiError(503, "wechat_unavailable", f"WeChat refused a pre-auth code: {exc}") from None
        except UpstreamUnavailable as exc:
            raise ApiError(503, "wechat_unavailable", str(exc)) from None
        params: list[tuple[str, str]] = [
            ("component_appid", platform.component_appid),
            ("pre_auth_code", code),
            ("redirect_uri", redirect_uri),
            ("auth_type", str(request.auth_type)),
        ]
        if request.biz_appid:
            params.append(("biz_appid", request.biz_appid))
        if request.category_ids:
            params.append(("category_id_list", "|".join(str(i) for i in request.category_ids)))
        h5 = [("action", "bindcomponent"), ("no_scan", "1"), *params]
        self._audit.record(
            actor, "authorization_link.created", platform_id=platform_id, authorizer_appid=request.biz_appid
        )
        return AuthorizationLinks(
            pc_url=f"{PC_PAGE}?{_encode(params)}",
            h5_url=f"{H5_PAGE}?{_encode(h5)}#wechat_redirect",
            h5_url_legacy=f"{H5_PAGE_LEGACY}?{_encode(h5)}#wechat_redirect",
            expires_at=int(self._clock() + expires_in),
        )

    def _validated(self, platform_id: str, request: LinkRequest) -> str:
        if request.auth_type not in AUTH_TYPES:
            raise ApiError(422, "invalid_request", "auth_type: must be 1, 2 or 3")
        if request.biz_appid is not None and not is_appid(request.biz_appid):
            raise ApiError(422, "invalid_request", "biz_appid: must be 'wx' followed by letters and digits")
        allowed = {1: OFFICIAL_ACCOUNT_SETS, 2: MINI_PROGRAM_SETS}.get(
            request.auth_type, OFFICIAL_ACCOUNT_SETS | MINI_PROGRAM_SETS
        )
        for i, category in enumerate(request.category_ids or []):
            if category not in allowed:
                kind = AUTH_TYPES[request.auth_type]
                raise ApiError(
                    422, "invalid_request", f"category_ids[{i}]: {category} is not a permission set of {kind}"
                )
        redirect_uri = request.redirect_uri or self.default_redirect(platform_id)
        public, wanted = urlsplit(self._public_url), urlsplit(redirect_uri)
        if (wanted.scheme, wanted.netloc) != (public.scheme, public.netloc):
            raise ApiError(
                422, "invalid_request", f"redirect_uri: must be on the gateway's public host {public.netloc}"
            )
        return redirect_uri

    async def complete(self, platform_id: str, auth_code: str) -> Authorized:
        """The redirect: exchange the code (or find it exchanged by the event) and describe the result.

        Raises UpstreamError 61009/61010 for a code WeChat refuses (expired, or used elsewhere).
        """
        platform = self._platform(platform_id)
        stored = await self._authorizations.exchange_code(platform_id, auth_code, actor="administrator")
        if stored is not None:
            appid = stored.authorizer_appid
        else:
            owner = await self._store.authorizations.code_owner(auth_code)
            if owner is None or owner[0] != platform_id:
                raise UpstreamError("api_query_auth", 61009, "authorization code already used elsewhere")
            appid = owner[1]
        authorization = await self._store.authorizations.get(platform_id, appid)
        profile = await self._store.authorizations.profile(appid)
        if profile is None:  # the other arrival exchanged the code and is still asking WeChat about it
            profile = await self._authorizations.refresh_profile(platform_id, appid)
        func_ids = sorted(authorization.func_ids) if authorization is not None else []
        return Authorized(
            platform_id=platform.id,
            platform_name=platform.name,
            authorizer_appid=appid,
            name=profile.nick_name if profile is not None else appid,
            kind=profile.kind if profile is not None else "unknown",
            permission_sets=[f"{i} {PERMISSION_SET_NAMES.get(i, '')}".strip() for i in func_ids],
        )

    async def redirect_page(self, platform_id: str, auth_code: str | None) -> RedirectPage:
        """The page an administrator lands on after approving (or failing to)."""
        if self._registry.platform(platform_id) is None:
            return RedirectPage(
                404, "Unknown platform", problem=f"There is no platform '{platform_id}' here."
            )
        if not auth_code:
            return RedirectPage(
                400, "No authorization code", problem="WeChat sent no auth_code to this page."
            )
        try:
            return RedirectPage(
                200, "Authorization complete", authorized=await self.complete(platform_id, auth_code)
            )
        except UpstreamError as exc:
            if exc.errcode not in CODE_REFUSED:
                problem = f"WeChat could not confirm the authorization ({exc.errcode}). Please try again."
                return RedirectPage(502, "Authorization not confirmed", problem=problem)
            what = "has expired" if exc.errcode == 61010 else "is not valid or was already used"
            problem = f"This authorization code {what} ({exc.errcode}), so nothing was recorded."
        except OutcomeUnknown:
            problem = (
                "WeChat did not answer in time, so whether it recorded this authorization is unknown. "
                "Do not authorize again yet: WeChat's authorization notice (or the next catalog sync) "
                "will complete it, and the account will then appear in the catalog."
            )
            return RedirectPage(503, "Authorization outcome unknown", problem=problem)
        except UpstreamUnavailable:
            problem = "WeChat could not be reached to confirm the authorization. Please try again."
            return RedirectPage(503, "Authorization not confirmed", problem=problem)
        except ApiError as exc:
            return RedirectPage(503, "Authorization not confirmed", problem=exc.message)
        try:
            link = await self.create_link("redirect-page", platform_id, LinkRequest())
        except ApiError:
            link = None
        return RedirectPage(410, "Authorization code expired or used", problem=problem, link=link)

    def _platform(self, platform_id: str) -> Platform:
        platform = self._registry.platform(platform_id)
        if platform is None:
            raise ApiError(404, "platform_unknown", f"no platform '{platform_id}' in the registry")
        return platform


def _encode(params: list[tuple[str, str]]) -> str:
    # Every value percent-encoded (the redirect URI's own ':' and '/' included), as WeChat decodes them.
    return urlencode(params, quote_via=quote, safe="")

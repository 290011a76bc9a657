"""Onboarding: invites and the start page for administrators, and the redirect that brings them back.

WeChat opens its authorization page only from a page on the component's 授权发起页域名 (it checks the
Referer), and a pre-auth code lives minutes and is used once (wechat-protocol.md §10). So administrators
get a signed, long-lived invite (`gateway.onboarding.invites`) to the gateway's start page, which mints a
fresh code
at each load and links to WeChat from the gateway's own origin. After the administrator approves, WeChat
sends the browser to the redirect URI with ``auth_code``; the same code also arrives in the ``authorized``
event, and whichever comes first claims and exchanges it (``AuthorizationService.exchange_code``), the other
waiting for that outcome and showing it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import quote, urlencode, urlsplit

import msgspec
import segno
from markupsafe import Markup

from gateway.authorizations.service import AuthorizationService, auth_code_problem
from gateway.credentials.tokens import TokenService
from gateway.errors import (
    InvalidInput,
    OutcomeUnknown,
    PlatformUnknown,
    Refused,
    TicketMissing,
    UpstreamError,
    UpstreamUnavailable,
    WeChatUnavailable,
)
from gateway.onboarding.invites import (
    DEFAULT_INVITE_VALID_S,
    MAX_INVITE_VALID_S,
    MIN_INVITE_VALID_S,
    InviteRefused,
    InviteSigner,
)
from gateway.registry.live import LiveRegistry, ReadsRegistry
from gateway.registry.model import Platform
from gateway.store.audit_trail import AuditTrail
from gateway.store.authorizations import AuthorizationStore
from gateway.wechat.routing import MINI_PROGRAM_SETS, OFFICIAL_ACCOUNT_SETS, PERMISSION_SET_NAMES
from gateway.xml import is_appid

__all__ = [
    "AuthorizationLinks",
    "Authorized",
    "DirectLinks",
    "InviteLink",
    "LinkRequest",
    "Onboarding",
    "RedirectPage",
    "StartPage",
]

PC_PAGE = "https://mp.weixin.qq.com/cgi-bin/componentloginpage"
H5_PAGE = "https://open.weixin.qq.com/wxaopen/safe/bindcomponent"
H5_PAGE_LEGACY = "https://mp.weixin.qq.com/safe/bindcomponent"
# The same pages under ``wechat.authorization_page_base`` (the simulator serves them at these paths).
PC_PATH, H5_PATH, H5_PATH_LEGACY = (
    "/cgi-bin/componentloginpage",
    "/wxaopen/safe/bindcomponent",
    "/safe/bindcomponent",
)
AUTH_TYPES = {1: "official accounts only", 2: "mini programs only", 3: "official accounts and mini programs"}
CODE_REFUSED = frozenset({61009, 61010})
REDIRECT_REMEDY = (
    "To authorize again, open the invite link you were sent once more: it stays valid and starts afresh "
    "each time. If it has expired, ask group IT for a new one (`gateway onboarding invite`)."
)


class LinkRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/platforms/{platform}/authorization-links``."""

    auth_type: int = 3
    biz_appid: str | None = None
    category_ids: list[int] | None = None
    redirect_uri: str | None = None
    invite_valid_s: int | None = None  # how long ``invite_url`` opens the start page; 7 days by default


class AuthorizationLinks(msgspec.Struct, frozen=True):
    """``invite_url``: the start page, to send the administrator (valid until ``invite_expires_at``).
    The direct links work once, until ``expires_at`` (Unix seconds), and only from a page on the
    gateway's domain: WeChat refuses them opened from mail or chat."""

    invite_url: str
    invite_expires_at: int
    pc_url: str
    h5_url: str
    h5_url_legacy: str
    expires_at: int


class InviteLink(msgspec.Struct, frozen=True):
    """A signed invite to the start page; ``expires_at`` in Unix seconds."""

    url: str
    expires_at: int


class DirectLinks(msgspec.Struct, frozen=True):
    """WeChat's authorization page for one fresh pre-auth code: on a computer, in WeChat (new and legacy
    form), until ``expires_at``."""

    pc_url: str
    h5_url: str
    h5_url_legacy: str
    expires_at: int


class StartPage(msgspec.Struct, frozen=True):
    """What the start page shows: the links and a QR code of the page itself, or the problem."""

    status: int
    title: str
    platform_name: str | None = None
    links: DirectLinks | None = None
    qr_svg: Markup | None = None
    problem: str | None = None
    remedy: str | None = None


class Authorized(msgspec.Struct, frozen=True):
    """What the redirect page says: which account authorized which platform with which sets."""

    platform_id: str
    platform_name: str
    authorizer_appid: str
    name: str
    kind: str
    permission_sets: list[str]


class RedirectPage(msgspec.Struct, frozen=True):
    """What the redirect page shows: the authorization, or the problem and what to do about it."""

    status: int
    title: str
    authorized: Authorized | None = None
    problem: str | None = None
    remedy: str | None = None


class Onboarding(ReadsRegistry):
    """Makes authorization links and completes authorizations from the redirect."""

    def __init__(
        self,
        registry: LiveRegistry,
        public_url: str,
        records: AuthorizationStore,
        tokens: TokenService,
        authorizations: AuthorizationService,
        audit: AuditTrail,
        invites: InviteSigner,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._live = registry
        self._invites = invites
        self._public_url = public_url.rstrip("/")
        self._records = records
        self._tokens = tokens
        self._authorizations = authorizations
        self._audit = audit
        self._clock = clock

    def default_redirect(self, platform_id: str) -> str:
        """Where WeChat sends the administrator back to by default."""
        return f"{self._public_url}/wechat/{platform_id}/authorized"

    def start_page_url(self, platform_id: str, token: str) -> str:
        """The start page of an invite, on the gateway's public URL."""
        return f"{self._public_url}/wechat/{platform_id}/authorize?{_encode([('invite', token)])}"

    def create_invite(self, actor: str, platform_id: str, request: LinkRequest) -> InviteLink:
        """A signed invite to the start page (no pre-auth code in it); `InvalidInput` naming a bad field."""
        self._platform(platform_id)
        redirect_uri = self._validated(platform_id, request)
        valid_s = _invite_valid_s(request)
        invite, token = self._invites.new(
            platform_id,
            request.auth_type,
            valid_s,
            biz_appid=request.biz_appid,
            category_ids=request.category_ids or (),
            # Only a redirect chosen by the caller rides in the invite; the default follows the public URL.
            redirect_uri=redirect_uri if request.redirect_uri else None,
        )
        self._audit.record(
            actor,
            "invite.created",
            platform_id=platform_id,
            authorizer_appid=request.biz_appid,
            detail=f"invite {invite.id}, auth_type {invite.auth_type}, valid until {_utc(invite.expires_at)}",
        )
        return InviteLink(self.start_page_url(platform_id, token), invite.expires_at)

    async def create_link(self, actor: str, platform_id: str, request: LinkRequest) -> AuthorizationLinks:
        """An invite to the start page, and direct links on a fresh pre-auth code; `InvalidInput` naming a bad
        field."""
        self._platform(platform_id)
        self._validated(platform_id, request)
        _invite_valid_s(request)  # every field checked before WeChat is asked for a code
        direct = await self._direct_links(platform_id, request)
        invite = self.create_invite(actor, platform_id, request)
        self._audit.record(
            actor, "authorization_link.created", platform_id=platform_id, authorizer_appid=request.biz_appid
        )
        return AuthorizationLinks(
            invite_url=invite.url,
            invite_expires_at=invite.expires_at,
            pc_url=direct.pc_url,
            h5_url=direct.h5_url,
            h5_url_legacy=direct.h5_url_legacy,
            expires_at=direct.expires_at,
        )

    async def start_page(self, platform_id: str, token: str | None) -> StartPage:
        """The start page of an invite: a fresh pre-auth code at each load, or why there is none."""
        ask_again = (
            "Ask the administrator who sent it for a new invite "
            "(group IT makes one with `gateway onboarding invite`)."
        )
        try:
            invite = self._invites.verify(token or "")
        except InviteRefused as refused:
            title = "Invite expired" if refused.reason == "expired" else "Invite not valid"
            return StartPage(
                410 if refused.reason == "expired" else 400, title, problem=refused.message, remedy=ask_again
            )
        platform = self._registry.platform(invite.platform)
        if invite.platform != platform_id or platform is None:
            problem = (
                f"This invite is for a platform this gateway does not serve ('{invite.platform}')."
                if platform is None
                else "This invite belongs to another page of this gateway."
            )
            return StartPage(404, "Unknown platform", problem=problem, remedy=ask_again)
        request = LinkRequest(
            auth_type=invite.auth_type,
            biz_appid=invite.biz_appid,
            category_ids=list(invite.category_ids) or None,
            redirect_uri=invite.redirect_uri,
        )
        try:
            links = await self._direct_links(platform_id, request)
        except TicketMissing:
            return StartPage(
                503,
                "Not ready yet",
                platform_name=platform.name,
                problem=f"{platform.name} is not ready to take authorizations yet: WeChat has not sent "
                "it its verify ticket (it does so every 10 minutes once the platform is set up).",
                remedy="Try this link again in a few minutes; if it keeps failing, tell group IT.",
            )
        except InvalidInput as exc:
            return StartPage(400, "Invite not valid", problem=exc.message, remedy=ask_again)
        except Refused:
            return StartPage(
                503,
                "WeChat not reachable",
                platform_name=platform.name,
                problem="WeChat could not be asked for an authorization code just now.",
                remedy="Reload this page in a minute.",
            )
        self._audit.record(
            "administrator",
            "invite.opened",
            platform_id=platform_id,
            authorizer_appid=invite.biz_appid,
            detail=f"invite {invite.id}: pre-auth code minted, valid until {_utc(links.expires_at)}",
        )
        # The QR opens this page again on the phone, never WeChat's page itself: a scanned link carries no
        # Referer, and WeChat refuses its authorization page without one (wechat-protocol.md §10). From
        # this page in WeChat's browser, the phone link is followed with the gateway's origin as Referer.
        qr = _qr_svg(self.start_page_url(platform_id, token or ""))
        return StartPage(200, f"Authorize {platform.name}", platform.name, links, qr)

    async def _direct_links(self, platform_id: str, request: LinkRequest) -> DirectLinks:
        """A fresh pre-auth code and WeChat's authorization page on it, on a computer and in WeChat."""
        platform = self._platform(platform_id)
        redirect_uri = self._validated(platform_id, request)
        component = await self._tokens.component_client(platform_id)
        try:
            code, expires_in = await component.create_pre_auth_code(platform.component_appid)
        except UpstreamError as exc:
            raise WeChatUnavailable(f"WeChat refused a pre-auth code: {exc}") from None
        except UpstreamUnavailable as exc:
            raise WeChatUnavailable(str(exc)) from None
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
        base = self._registry.wechat.authorization_page_base
        pc_page, h5_page, h5_legacy = (
            (PC_PAGE, H5_PAGE, H5_PAGE_LEGACY)
            if base is None
            else (base + PC_PATH, base + H5_PATH, base + H5_PATH_LEGACY)
        )
        return DirectLinks(
            pc_url=f"{pc_page}?{_encode(params)}",
            h5_url=f"{h5_page}?{_encode(h5)}#wechat_redirect",
            h5_url_legacy=f"{h5_legacy}?{_encode(h5)}#wechat_redirect",
            expires_at=int(self._clock() + expires_in),
        )

    def _validated(self, platform_id: str, request: LinkRequest) -> str:
        if request.auth_type not in AUTH_TYPES:
            raise InvalidInput("auth_type", "must be 1, 2 or 3")
        if request.biz_appid is not None and not is_appid(request.biz_appid):
            raise InvalidInput("biz_appid", "must be 'wx' followed by letters and digits")
        allowed = {1: OFFICIAL_ACCOUNT_SETS, 2: MINI_PROGRAM_SETS}.get(
            request.auth_type, OFFICIAL_ACCOUNT_SETS | MINI_PROGRAM_SETS
        )
        for i, category in enumerate(request.category_ids or []):
            if category not in allowed:
                kind = AUTH_TYPES[request.auth_type]
                raise InvalidInput(f"category_ids[{i}]", f"{category} is not a permission set of {kind}")
        redirect_uri = request.redirect_uri or self.default_redirect(platform_id)
        public, wanted = urlsplit(self._public_url), urlsplit(redirect_uri)
        if (wanted.scheme, wanted.netloc) != (public.scheme, public.netloc):
            raise InvalidInput("redirect_uri", f"must be on the gateway's public host {public.netloc}")
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
            owner = await self._records.code_owner(auth_code)
            if owner is None or owner[0] != platform_id:
                raise UpstreamError("api_query_auth", 61009, "authorization code already used elsewhere")
            appid = owner[1]
        authorization = await self._records.get(platform_id, appid)
        profile = await self._records.profile(appid)
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
        malformed = auth_code_problem(auth_code)
        if malformed is not None:  # neither claimed (a row) nor sent to WeChat
            problem = (
                f"This is not an authorization code WeChat sends ({malformed}), so nothing was recorded."
            )
            return RedirectPage(400, "Authorization code not valid", problem=problem, remedy=REDIRECT_REMEDY)
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
        except Refused as exc:
            return RedirectPage(503, "Authorization not confirmed", problem=exc.message)
        # No fresh link here: this page is open to anyone, and only a signed invite (with its biz_appid
        # restriction) may mint a pre_auth_code (SPEC §4).
        return RedirectPage(
            410, "Authorization code expired or used", problem=problem, remedy=REDIRECT_REMEDY
        )

    def _platform(self, platform_id: str) -> Platform:
        platform = self._registry.platform(platform_id)
        if platform is None:
            raise PlatformUnknown(platform_id)
        return platform


def _qr_svg(url: str) -> Markup:
    """The QR code of ``url`` as inline SVG (segno's encoder; its markup carries no script or style)."""
    qr = segno.make(url, error="m")
    # The markup is segno's own: paths and a <title> it escapes; nothing of the URL appears as text.
    svg = qr.svg_inline(scale=4, border=4, light="#fff", title="QR code of this page, to open it on a phone")
    return Markup(svg)  # noqa: S704


def _invite_valid_s(request: LinkRequest) -> int:
    valid_s = request.invite_valid_s
    if valid_s is None:
        return DEFAULT_INVITE_VALID_S
    if not MIN_INVITE_VALID_S <= valid_s <= MAX_INVITE_VALID_S:
        raise InvalidInput(
            "invite_valid_s",
            f"must be between {MIN_INVITE_VALID_S} and {MAX_INVITE_VALID_S} seconds (30 days)",
        )
    return valid_s


def _utc(at: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))


def _encode(params: list[tuple[str, str]]) -> str:
    # Every value percent-encoded (the redirect URI's own ':' and '/' included), as WeChat decodes them.
    return urlencode(params, quote_via=quote, safe="")

"""The simulated WeChat world: components, authorizers, authorizations, open accounts and their rules.

Plain in-memory state, no I/O: every method is synchronous and raises ``WeChatError`` with the code
WeChat answers (or ``ControlError`` for the /sim control API). Pushes are returned as ``Event`` values for
the pusher to deliver. Time is ``clock()`` plus an offset that tests advance.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from gateway.simulator import wire
from gateway.simulator.config import SimComponent, SimulatorConfig
from gateway.simulator.errors import ControlError, WeChatError
from gateway.simulator.faults import Counters, FaultBook
from gateway.simulator.png import code_image
from gateway.simulator.sns import UserLogins, user_openid
from gateway.simulator.tokens import TOKEN_TTL_S, IssuedToken, TokenBook

__all__ = [
    "AccountProfile",
    "Approval",
    "CustomMessage",
    "Event",
    "Kind",
    "OpenAccount",
    "Received",
    "Upload",
    "UserMessage",
    "World",
]

Kind = Literal["official_account", "mini_program"]

TICKET_VALIDITY_S = 12 * 3600
REFRESH_TOKEN_TRANSITION_S = 300  # a refresh token replaced by re-authorization keeps working 5 minutes
MEDIA_TTL_S = 3 * 86400  # temporary media live three days
FOLLOWERS_PAGE = 10_000
AUTHORIZER_LIST_MAX = 500
CLEARS_PER_MONTH = 10
UNVERIFIED_OPEN_LIMIT = 5  # members of an unverified, API-created open account
BEIJING_UTC_OFFSET_S = 8 * 3600  # quota months turn over in China Standard Time
MEDIA_TYPES = frozenset({"image", "voice", "video", "thumb"})
TICKET_TYPES = frozenset({"jsapi", "wx_card"})
ENCODING_AES_KEY = re.compile(r"[A-Za-z0-9]{43}")
RECEIVED_KEPT = 1000  # calls of WeChat's API kept for GET /sim/requests

# Sets an account can grant to one component only (protocol §7).
EXCLUSIVE_SETS = frozenset({4, 24, 34, 54, 18, 25, 40, 41, 45, 49, 51, 73, 76, 81})
# Permission sets by API family and account kind.
OPEN_ACCOUNT_SET: dict[Kind, int] = {"official_account": 24, "mini_program": 25}
HAVE_OPEN_SET: dict[Kind, int] = {"official_account": 3, "mini_program": 30}
SET_MESSAGES = 1
SET_USERS = 2
SET_MEDIA = 11
SET_MENU = 15
SET_WXA_CODE = 17
# WeChat's release-test accounts (全网发布) and their original ids, used when they are seeded without one.
RELEASE_TEST_USER_NAMES = {
    "wx570bc396a51b8ff8": "gh_3c884a361561",
    "wx9252c5e0bb1836fc": "gh_c0f28a78b318",
    "wx8e1097c5bc82cde9": "gh_3f222ed8d140",
    "wx14550af28c71a144": "gh_26128078e9ab",
    "wxa35b9c23cfe664eb": "gh_2b3713f184a6",
    "wxd101a85aa106f53e": "gh_8dad206e9538",
    "wxc39235c15087f6f3": "gh_905ae9d01059",
    "wx7720d01d4b2a4500": "gh_393666f1fdf4",
    "wx05d483572dcd5d8b": "gh_39abb5d4e1b7",
    "wx5910277cae6fd970": "gh_7818dcb60240",
}
ADDRESSING = frozenset({"ToUserName", "FromUserName", "CreateTime"})  # set by WeChat, not by the user


class AccountProfile(msgspec.Struct, forbid_unknown_fields=True):
    """An official account or mini program as ``api_get_authorizer_info`` describes it."""

    authorizer_appid: str
    kind: Kind
    nick_name: str
    principal_name: str
    user_name: str | None = None  # the gh_ original id; derived from the appid when left out
    verify_type: int = 0  # 0: WeChat-verified, -1: unverified
    # default: 2 (a service account) for official accounts, 0 for mini programs
    service_type: int | None = None
    followers: int = 3


class Event(msgspec.Struct, frozen=True):
    """A push to a component's authorization event URL, before encryption."""

    component_appid: str
    info_type: str
    create_time: int
    fields: dict[str, str | int] = {}

    def payload(self) -> dict[str, str | int | dict[str, str | int]]:
        """The decrypted XML's elements, in WeChat's order."""
        head: dict[str, str | int | dict[str, str | int]] = {
            "AppId": self.component_appid,
            "CreateTime": self.create_time,
            "InfoType": self.info_type,
        }
        return head | self.fields


class UserMessage(msgspec.Struct, frozen=True):
    """A user's message or event to an authorizer, before encryption: relayed to the message URL."""

    component_appid: str
    authorizer_appid: str
    to_user_name: str  # the account's original id (gh_…)
    from_user_name: str  # the user's openid
    create_time: int
    fields: dict[str, str | int | dict[str, str | int]]  # MsgType, Content / Event …, MsgId; blocks

    def payload(self) -> dict[str, str | int | dict[str, str | int]]:
        """The decrypted XML's elements, in WeChat's order."""
        head: dict[str, str | int | dict[str, str | int]] = {
            "ToUserName": self.to_user_name,
            "FromUserName": self.from_user_name,
            "CreateTime": self.create_time,
        }
        return head | self.fields


class Approval(msgspec.Struct, frozen=True):
    """What an administrator's approval produced: the authorization code and the push it triggers."""

    auth_code: str
    expires_in: int
    event: Event | None


class Upload(msgspec.Struct, frozen=True):
    """A file received in a multipart upload."""

    content: bytes
    content_type: str
    filename: str


@dataclass
class Component:
    config: SimComponent
    tickets: dict[str, float] = field(default_factory=dict)  # ticket -> pushed at


@dataclass
class Media:
    upload: Upload
    media_type: str
    created_at: float


@dataclass
class Authorizer:
    profile: AccountProfile
    followers: list[str]
    menu: dict[str, Any] | None = None
    media: dict[str, Media] = field(default_factory=dict)  # by media_id
    tickets: dict[str, tuple[str, float]] = field(default_factory=dict)  # type -> (ticket, expires at)

    @property
    def appid(self) -> str:
        return self.profile.authorizer_appid

    @property
    def kind(self) -> Kind:
        return self.profile.kind


@dataclass
class Authorization:
    component_appid: str
    authorizer_appid: str
    func_ids: list[int]
    refresh_token: str
    auth_time: int
    live: bool = True
    replaced_refresh_token: tuple[str, float] | None = None  # (value, valid until)

    def accepts(self, refresh_token: str, now: float) -> bool:
        if not self.live or not refresh_token:
            return False
        if _same(refresh_token, self.refresh_token):
            return True
        replaced = self.replaced_refresh_token
        return replaced is not None and now < replaced[1] and _same(refresh_token, replaced[0])


@dataclass
class Code:
    """A pre-auth code: single use, expiring."""

    component_appid: str
    expires_at: float
    used: bool = field(default=False, kw_only=True)


@dataclass
class AuthCode(Code):
    """An authorization code, naming the account that approved, and the push that carried it."""

    authorizer_appid: str
    event: Event | None = field(default=None, kw_only=True)


class OpenAccount(msgspec.Struct, forbid_unknown_fields=True):
    """An Open Platform account and the official accounts and mini programs bound to it."""

    open_appid: str
    principal_name: str
    verified: bool = False
    created_by_api: bool = False  # False: registered in the open.weixin.qq.com console
    members: list[str] = msgspec.field(default_factory=list)


class Received(msgspec.Struct):
    """A call of WeChat's API as it arrived: which endpoint, and its query (for tests to see what a
    caller sent, e.g. that no client key reached WeChat)."""

    endpoint: str
    method: str
    query: dict[str, str]


class CustomMessage(msgspec.Struct):
    """A customer-service message sent through message/custom/send."""

    component_appid: str
    authorizer_appid: str
    sent_at: int
    message: dict[str, Any]


class World:
    """Everything the simulated WeChat knows, and the rules it applies."""

    def __init__(self, config: SimulatorConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._offset = 0.0
        self.tokens = TokenBook(config.token_overlap_s)
        self.faults = FaultBook()
        self.counters = Counters()
        self.components: dict[str, Component] = {}
        self.authorizers: dict[str, Authorizer] = {}
        self.authorizations: dict[tuple[str, str], Authorization] = {}  # insertion order is list order
        self.open_accounts: dict[str, OpenAccount] = {}
        self.messages: list[CustomMessage] = []
        self._pre_auth_codes: dict[str, Code] = {}
        self._auth_codes: dict[str, AuthCode] = {}
        self._quota_clears: Counter[tuple[str, str]] = Counter()
        self.logins = UserLogins(self)
        self.received: deque[Received] = deque(maxlen=RECEIVED_KEPT)
        for component in config.components:
            self.put_component(component)

    # --- time ---------------------------------------------------------------------------------------

    def now(self) -> float:
        """The world's time: the clock plus every /sim/clock advance."""
        return self._clock() + self._offset

    def advance(self, seconds: float) -> float:
        """Move the world's clock forward; returns the new time."""
        if seconds < 0:
            raise ControlError(400, "the clock only moves forward")
        self._offset += seconds
        return self.now()

    # --- components and tickets ---------------------------------------------------------------------

    def put_component(self, config: SimComponent) -> Component:
        """Add a component, or replace its settings while keeping its tickets and tokens."""
        if not ENCODING_AES_KEY.fullmatch(config.encoding_aes_key):
            raise ControlError(400, "encoding_aes_key must be 43 characters of [A-Za-z0-9]")
        component = self.components.get(config.appid)
        if component is None:
            component = self.components[config.appid] = Component(config)
        else:
            component.config = config
        return component

    def component(self, appid: str) -> Component:
        """The component ``appid``; 404 for the control API when unknown."""
        component = self.components.get(appid)
        if component is None:
            raise ControlError(404, f"no component {appid}")
        return component

    def issue_ticket(self, appid: str) -> tuple[str, Event]:
        """A fresh component_verify_ticket, valid from now for 12 h, and its push."""
        component = self.component(appid)
        ticket = "ticket@@@" + secrets.token_urlsafe(60)
        now = self.now()
        component.tickets[ticket] = now
        event = Event(appid, "component_verify_ticket", int(now), {"ComponentVerifyTicket": ticket})
        return ticket, event

    def ticket_valid(self, pushed_at: float) -> bool:
        """Whether a ticket pushed at ``pushed_at`` still mints tokens (for 12 h)."""
        return self.now() - pushed_at <= TICKET_VALIDITY_S

    # --- which accounts a call concerns (for counters and faults) -----------------------------------

    def call_keys(self, token: str | None, body: object) -> list[str]:
        """The appids a call involves, the most specific (an authorizer) first."""
        authorizer = component = appid = None
        issued = self.tokens.find(token) if token else None
        if issued is not None:
            component, authorizer = issued.owner
        if isinstance(body, dict):
            authorizer = authorizer or _text(body.get("authorizer_appid"))
            component = component or _text(body.get("component_appid"))
            appid = _text(body.get("appid"))
            code = self._auth_codes.get(_text(body.get("authorization_code")) or "")
            authorizer = authorizer or (code.authorizer_appid if code else None)
        return list(dict.fromkeys(key for key in (authorizer, component, appid) if key))

    # --- component APIs -----------------------------------------------------------------------------

    def component_token(self, body: wire.ComponentTokenBody) -> wire.ComponentAccessToken:
        """api_component_token: any ticket pushed to this component in the last 12 h is good."""
        component = self.components.get(body.component_appid)
        if component is None:
            raise WeChatError(61011)
        if not body.component_appsecret:
            raise WeChatError(41004)
        if not _same(body.component_appsecret, component.config.secret):
            raise WeChatError(40125)
        pushed_at = component.tickets.get(body.component_verify_ticket)
        if pushed_at is None:
            raise WeChatError(61006)
        if not self.ticket_valid(pushed_at):
            raise WeChatError(61005)
        token = self.tokens.mint((component.config.appid, None), self.now())
        return wire.ComponentAccessToken(token.value, TOKEN_TTL_S)

    def create_pre_auth_code(self, token: str | None, component_appid: str) -> wire.PreAuthCode:
        """api_create_preauthcode: a single-use code for one authorization page."""
        component = self._component_caller(token, component_appid)
        code = "preauthcode@@@" + secrets.token_urlsafe(48)
        ttl = self.config.pre_auth_code_ttl_s
        self._pre_auth_codes[code] = Code(component.config.appid, self.now() + ttl)
        return wire.PreAuthCode(code, ttl)

    def query_auth(self, token: str | None, body: wire.QueryAuthBody) -> wire.QueryAuthResult:
        """api_query_auth: exchange a single-use authorization code."""
        component = self._component_caller(token, body.component_appid)
        code = self._auth_codes.get(body.authorization_code)
        if code is None or code.used or code.component_appid != component.config.appid:
            raise WeChatError(61009)
        if self.now() >= code.expires_at:
            raise WeChatError(61010)
        code.used = True
        authorization = self.authorizations[(code.component_appid, code.authorizer_appid)]
        if not authorization.live:
            raise WeChatError(61009)
        access = self.tokens.mint((code.component_appid, code.authorizer_appid), self.now())
        return wire.QueryAuthResult(
            wire.AuthorizationInfo(
                authorizer_appid=authorization.authorizer_appid,
                authorizer_access_token=access.value,
                expires_in=TOKEN_TTL_S,
                authorizer_refresh_token=authorization.refresh_token,
                func_info=wire.func_info(authorization.func_ids),
            )
        )

    def authorizer_token(self, token: str | None, body: wire.AuthorizerTokenBody) -> wire.AuthorizerToken:
        """api_authorizer_token: the refresh token does not rotate; it answers the current one."""
        component = self._component_caller(token, body.component_appid)
        if not body.authorizer_appid:
            raise WeChatError(41002)
        authorization = self.authorizations.get((component.config.appid, body.authorizer_appid))
        if authorization is None:
            raise WeChatError(61003)
        now = self.now()
        if not authorization.accepts(body.authorizer_refresh_token, now):
            raise WeChatError(61023)
        access = self.tokens.mint((component.config.appid, body.authorizer_appid), now)
        return wire.AuthorizerToken(access.value, TOKEN_TTL_S, authorization.refresh_token)

    def authorizer_info(self, token: str | None, body: wire.AuthorizerInfoBody) -> wire.AuthorizerInfoResult:
        """api_get_authorizer_info: 61003 unless the account holds a live authorization to this component."""
        component = self._component_caller(token, body.component_appid)
        authorization = self.authorizations.get((component.config.appid, body.authorizer_appid))
        if authorization is None or not authorization.live:
            raise WeChatError(61003)
        profile = self.authorizers[body.authorizer_appid].profile
        return wire.AuthorizerInfoResult(
            authorizer_info=_describe(profile),
            authorization_info=wire.AuthorizationSummary(
                authorization.authorizer_appid,
                authorization.refresh_token,
                wire.func_info(authorization.func_ids),
            ),
        )

    def authorizer_list(self, token: str | None, body: wire.AuthorizerListBody) -> wire.AuthorizerList:
        """api_get_authorizer_list: live authorizations in the order they were first granted.

        ``count`` above 500 is 40170 ("args count exceed count limit"), the code WeChat documents for it.
        """
        component = self._component_caller(token, body.component_appid)
        if body.count > AUTHORIZER_LIST_MAX:
            raise WeChatError(40170)
        if body.offset < 0 or body.count < 0:
            raise WeChatError(47001)
        live = [
            a for a in self.authorizations.values() if a.component_appid == component.config.appid and a.live
        ]
        page = live[body.offset : body.offset + body.count]
        return wire.AuthorizerList(
            total_count=len(live),
            items=[wire.AuthorizerListItem(a.authorizer_appid, a.refresh_token, a.auth_time) for a in page],
        )

    def clear_quota(self, token: str | None, appid: str) -> wire.Ok:
        """clear_quota: 10 per account per (Beijing) month; lifts that account's 45009 fault."""
        issued = self._valid_token(token)
        if not appid:
            raise WeChatError(41002)
        if appid != (issued.authorizer_appid or issued.component_appid):
            raise WeChatError(40013)
        return self._clear(appid)

    def clear_quota_v2(self, body: wire.ClearQuotaV2Body) -> wire.Ok:
        """clear_quota/v2: by the component's appsecret, no token; the component's own quota, or that of
        ``appid`` when it has authorized the component. Shares the 10-per-month allowance."""
        component = self.components.get(body.component_appid)
        if component is None:
            raise WeChatError(61011)
        if not body.appsecret:
            raise WeChatError(41004)
        if not _same(body.appsecret, component.config.secret):
            raise WeChatError(40125)
        appid = body.appid or component.config.appid
        if body.appid and not any(
            a.component_appid == component.config.appid and a.authorizer_appid == body.appid and a.live
            for a in self.authorizations.values()
        ):
            raise WeChatError(40013)
        return self._clear(appid)

    def _clear(self, appid: str) -> wire.Ok:
        month = time.strftime("%Y-%m", time.gmtime(self.now() + BEIJING_UTC_OFFSET_S))
        if self._quota_clears[(appid, month)] >= CLEARS_PER_MONTH:
            raise WeChatError(48006)
        self._quota_clears[(appid, month)] += 1
        self.faults.clear_quota(appid)
        return wire.Ok()

    # --- open-platform account binding (protocol §6) ------------------------------------------------

    def open_create(self, token: str | None, appid: str) -> wire.OpenAppid:
        """Create an unverified open account with the caller's principal and bind the caller to it."""
        authorizer = self._open_caller(token, appid, OPEN_ACCOUNT_SET)
        if self.open_account_of(authorizer.appid) is not None:
            raise WeChatError(89000)
        open_appid = "wx" + secrets.token_hex(8)
        self.open_accounts[open_appid] = OpenAccount(
            open_appid,
            authorizer.profile.principal_name,
            verified=False,
            created_by_api=True,
            members=[authorizer.appid],
        )
        return wire.OpenAppid(open_appid)

    def open_bind(self, token: str | None, body: wire.OpenBindBody) -> wire.Ok:
        """Bind the caller: same principal; an unverified open account must be API-created, holds five."""
        authorizer = self._open_caller(token, body.appid, OPEN_ACCOUNT_SET)
        account = self._open_account(body.open_appid)
        if self.open_account_of(authorizer.appid) is not None:
            raise WeChatError(89000)
        if not account.verified and not account.created_by_api:
            raise WeChatError(89036)
        if account.principal_name != authorizer.profile.principal_name:
            raise WeChatError(89001)
        if not account.verified and len(account.members) >= UNVERIFIED_OPEN_LIMIT:
            raise WeChatError(89004)
        account.members.append(authorizer.appid)
        return wire.Ok()

    def open_unbind(self, token: str | None, body: wire.OpenBindBody) -> wire.Ok:
        """Unbind from an API-created open account; a caller not bound to it is told 89002."""
        authorizer = self._open_caller(token, body.appid, OPEN_ACCOUNT_SET)
        account = self._open_account(body.open_appid)
        if not account.created_by_api:
            raise WeChatError(89003)
        if account.principal_name != authorizer.profile.principal_name:
            raise WeChatError(89001)
        if authorizer.appid not in account.members:
            raise WeChatError(89002)
        account.members.remove(authorizer.appid)
        return wire.Ok()

    def open_get(self, token: str | None, appid: str) -> wire.OpenAppid:
        """The open account the caller is bound to; 89002 when none."""
        authorizer = self._open_caller(token, appid, OPEN_ACCOUNT_SET)
        account = self.open_account_of(authorizer.appid)
        if account is None:
            raise WeChatError(89002)
        return wire.OpenAppid(account.open_appid)

    def open_have(self, token: str | None) -> wire.HaveOpen:
        """Whether the caller is bound to an open account (sets 3 or 30, not 24/25)."""
        authorizer = self._open_caller(token, "", HAVE_OPEN_SET)
        return wire.HaveOpen(self.open_account_of(authorizer.appid) is not None)

    def open_account_of(self, appid: str) -> OpenAccount | None:
        """The open account ``appid`` is bound to, if any."""
        return next((a for a in self.open_accounts.values() if appid in a.members), None)

    def _open_account(self, open_appid: str) -> OpenAccount:
        account = self.open_accounts.get(open_appid)
        if account is None:
            raise WeChatError(40013)
        return account

    def _open_caller(self, token: str | None, appid: str, sets: dict[Kind, int]) -> Authorizer:
        authorization, authorizer = self._authorizer_caller(token)
        self._require(authorization, sets[authorizer.kind])
        if appid and appid != authorizer.appid:
            raise WeChatError(40013)
        return authorizer

    # --- authorizer APIs ----------------------------------------------------------------------------

    def followers(self, token: str | None, next_openid: str) -> wire.Followers:
        """user/get: pages of 10 000 openids; ``next_openid`` is the last one of the previous page."""
        authorization, authorizer = self._authorizer_caller(token)
        self._require(authorization, SET_USERS)
        start = 0
        if next_openid:
            try:
                start = authorizer.followers.index(next_openid) + 1
            except ValueError:
                raise WeChatError(40003) from None
        page = authorizer.followers[start : start + FOLLOWERS_PAGE]
        return wire.Followers(
            total=len(authorizer.followers),
            count=len(page),
            data=wire.FollowerIds(page) if page else None,
            next_openid=page[-1] if page else "",
        )

    def send_custom(self, token: str | None, message: object) -> wire.Ok:
        """message/custom/send to a follower; recorded for ``GET /sim/messages``."""
        authorization, authorizer = self._authorizer_caller(token)
        self._require(authorization, SET_MESSAGES)
        if not isinstance(message, dict):
            raise WeChatError(47001)
        if message.get("touser") not in authorizer.followers:
            raise WeChatError(40003)
        if not isinstance(message.get("msgtype"), str):
            raise WeChatError(40008)
        self.messages.append(
            CustomMessage(authorization.component_appid, authorizer.appid, int(self.now()), message)
        )
        return wire.Ok()

    def create_menu(self, token: str | None, menu: object) -> wire.Ok:
        """menu/create: the menu replaces the previous one."""
        authorization, authorizer = self._authorizer_caller(token)
        self._require(authorization, SET_MENU)
        if not isinstance(menu, dict):
            raise WeChatError(47001)
        if not isinstance(menu.get("button"), list) or not menu["button"]:
            raise WeChatError(40016)
        authorizer.menu = menu
        return wire.Ok()

    def get_menu(self, token: str | None) -> wire.MenuView:
        """menu/get: 46003 before any menu was created."""
        authorization, authorizer = self._authorizer_caller(token)
        self._require(authorization, SET_MENU)
        if authorizer.menu is None:
            raise WeChatError(46003)
        return wire.MenuView(authorizer.menu)

    def ticket(self, token: str | None, ticket_type: str) -> wire.JsapiTicket:
        """ticket/getticket: one ticket per account and type, the same until it expires."""
        _, authorizer = self._authorizer_caller(token)
        if ticket_type not in TICKET_TYPES:
            raise WeChatError(40097)
        now = self.now()
        ticket, expires_at = authorizer.tickets.get(ticket_type, ("", now))
        if now >= expires_at:
            ticket, expires_at = secrets.token_urlsafe(64), now + TOKEN_TTL_S
            authorizer.tickets[ticket_type] = (ticket, expires_at)
        return wire.JsapiTicket(ticket, int(expires_at - now))

    def wxa_code(self, token: str | None, path: str) -> wire.Binary:
        """wxa/getwxacode: mini programs only, with set 17."""
        authorization, authorizer = self._authorizer_caller(token)
        if authorizer.kind != "mini_program":
            raise WeChatError(48001)
        self._require(authorization, SET_WXA_CODE)
        return wire.Binary(code_image(path), "image/png")

    def upload_media(self, token: str | None, media_type: str, upload: Upload | None) -> wire.MediaUploaded:
        """media/upload: temporary media, kept three days."""
        authorization, authorizer = self._authorizer_caller(token)
        self._require(authorization, SET_MEDIA)
        if media_type not in MEDIA_TYPES:
            raise WeChatError(40004)
        if upload is None or not upload.content:
            raise WeChatError(41005)
        media_id = secrets.token_urlsafe(48)
        now = self.now()
        authorizer.media[media_id] = Media(upload, media_type, now)
        return wire.MediaUploaded(media_type, media_id, int(now))

    def get_media(self, token: str | None, media_id: str) -> wire.Binary:
        """media/get: the uploaded bytes and content type, for three days."""
        authorization, authorizer = self._authorizer_caller(token)
        self._require(authorization, SET_MEDIA)
        media = authorizer.media.get(media_id)
        if media is None or self.now() - media.created_at >= MEDIA_TTL_S:
            raise WeChatError(40007)
        return wire.Binary(media.upload.content, media.upload.content_type, media.upload.filename)

    # --- token checks -------------------------------------------------------------------------------

    def _valid_token(self, token: str | None) -> IssuedToken:
        if not token:
            raise WeChatError(41001)
        issued = self.tokens.find(token)
        if issued is None:
            raise WeChatError(40001)
        issued.check(self.now())
        return issued

    def signed_by(self, token: str | None, component_appid: str) -> str:
        """The appid of the component whose live component_access_token this is (a call signed by the
        component, such as the sns/ logins); the query must name it."""
        return self._component_caller(token, component_appid).config.appid

    def _component_caller(self, token: str | None, component_appid: str) -> Component:
        """The component whose live component_access_token this is; the body must name it."""
        issued = self._valid_token(token)
        if issued.authorizer_appid is not None:
            raise WeChatError(48001)
        if not component_appid:
            raise WeChatError(41002)
        if component_appid != issued.component_appid:
            raise WeChatError(40013)
        return self.components[issued.component_appid]

    def _authorizer_caller(self, token: str | None) -> tuple[Authorization, Authorizer]:
        """The live authorization an authorizer_access_token was minted under."""
        issued = self._valid_token(token)
        if issued.authorizer_appid is None:
            raise WeChatError(48001)  # a component token cannot act for an account
        authorization = self.authorizations[(issued.component_appid, issued.authorizer_appid)]
        if not authorization.live:
            raise WeChatError(40001)
        return authorization, self.authorizers[issued.authorizer_appid]

    @staticmethod
    def _require(authorization: Authorization, func_id: int) -> None:
        if func_id not in authorization.func_ids:
            raise WeChatError(48001)

    # --- control: seeding, authorization by an administrator, revocation ----------------------------

    def seed_authorizer(self, profile: AccountProfile, components: dict[str, list[int]]) -> dict[str, str]:
        """Create or update an account and its authorizations (no push); returns the refresh tokens."""
        for component_appid in components:
            self.component(component_appid)
        for component_appid, func_ids in components.items():
            self._check_exclusive(profile.authorizer_appid, component_appid, func_ids)
        self._put_authorizer(profile)
        now = self.now()
        for component_appid, func_ids in components.items():
            existing = self.authorizations.get((component_appid, profile.authorizer_appid))
            if existing is not None and existing.live:
                existing.func_ids = sorted(set(func_ids))
            else:
                self._grant(component_appid, profile.authorizer_appid, func_ids, now)
        return {c: self.authorizations[(c, profile.authorizer_appid)].refresh_token for c in components}

    def approve(
        self, pre_auth_code: str, authorizer_appid: str, func_ids: list[int], profile: AccountProfile | None
    ) -> Approval:
        """An administrator approves on the authorization page.

        A new (or previously revoked) authorization pushes ``authorized``; a changed one pushes
        ``updateauthorized`` and gets a new refresh token, the old one staying valid 5 minutes; an
        unchanged one only gets the new refresh token. Either way a re-authorization invalidates the
        account's access tokens at once.
        """
        code = self.pending_pre_auth_code(pre_auth_code)
        now = self.now()
        if authorizer_appid not in self.authorizers and profile is None:
            raise ControlError(
                404, f"no authorizer {authorizer_appid}: seed it or give kind, nick_name, principal_name"
            )
        self._check_exclusive(authorizer_appid, code.component_appid, func_ids)
        if profile is not None and authorizer_appid not in self.authorizers:
            self._put_authorizer(profile)
        code.used = True

        key = (code.component_appid, authorizer_appid)
        existing = self.authorizations.get(key)
        info_type: str | None = "authorized"
        if existing is not None and existing.live:
            info_type = "updateauthorized" if set(existing.func_ids) != set(func_ids) else None
            existing.replaced_refresh_token = (existing.refresh_token, now + REFRESH_TOKEN_TRANSITION_S)
            existing.refresh_token = _refresh_token()
            # The account's access tokens die at once (40001); api_query_auth issues the next one
            # (user report: WeixinCloud/wxcloudrun-wxcomponent issue 10).
            self.tokens.retire_owner(key, now)
            existing.func_ids = sorted(set(func_ids))
            existing.auth_time = int(now)
        else:
            self._grant(code.component_appid, authorizer_appid, func_ids, now)

        auth_code = "queryauthcode@@@" + secrets.token_urlsafe(48)
        ttl = self.config.auth_code_ttl_s
        event = None
        if info_type is not None:
            fields: dict[str, str | int] = {
                "AuthorizerAppid": authorizer_appid,
                "AuthorizationCode": auth_code,
                "AuthorizationCodeExpiredTime": int(now + ttl),
                "PreAuthCode": pre_auth_code,
            }
            event = Event(code.component_appid, info_type, int(now), fields)
        self._auth_codes[auth_code] = AuthCode(code.component_appid, now + ttl, authorizer_appid, event=event)
        return Approval(auth_code, ttl, event)

    def authorization_event(self, auth_code: str) -> Event:
        """The ``authorized`` (or ``updateauthorized``) push that carries ``auth_code``, to push (again)."""
        code = self._auth_codes.get(auth_code)
        if code is None:
            raise ControlError(404, "unknown authorization code")
        if code.event is None:
            raise ControlError(409, "that approval changed nothing, so WeChat pushes nothing for it")
        return code.event

    def user_message(
        self,
        component_appid: str,
        authorizer_appid: str,
        fields: dict[str, str | int | dict[str, str | int]],
        from_user: str | None,
    ) -> UserMessage:
        """A follower (``from_user``, by default the first) writes to an account, or triggers an event.

        WeChat relays it to a component the account authorized; ordinary messages get a ``MsgId``.
        """
        self.component(component_appid)
        authorization = self.authorizations.get((component_appid, authorizer_appid))
        if authorization is None or not authorization.live:
            raise ControlError(409, f"{authorizer_appid} has no live authorization to {component_appid}")
        if ADDRESSING & set(fields):
            raise ControlError(400, f"{sorted(ADDRESSING & set(fields))} are set by WeChat, not given")
        msg_type = fields.get("MsgType")
        if not isinstance(msg_type, str) or not msg_type:
            raise ControlError(400, "fields must name the MsgType")
        authorizer = self.authorizers[authorizer_appid]
        if from_user is None:
            if not authorizer.followers:
                raise ControlError(409, f"{authorizer_appid} has no followers to write to it")
            from_user = authorizer.followers[0]
        elif from_user not in authorizer.followers:
            raise ControlError(400, f"{from_user} does not follow {authorizer_appid}")
        if msg_type != "event" and "MsgId" not in fields:
            fields = fields | {"MsgId": secrets.randbits(63)}
        return UserMessage(
            component_appid,
            authorizer_appid,
            authorizer.profile.user_name or "",
            from_user,
            int(self.now()),
            fields,
        )

    def pending_pre_auth_code(self, value: str) -> Code:
        """A pre-auth code an administrator can still approve: known, unused, unexpired."""
        code = self._pre_auth_codes.get(value)
        if code is None:
            raise ControlError(404, "unknown pre-auth code")
        if code.used:
            raise ControlError(409, "pre-auth code already used")
        if self.now() >= code.expires_at:
            raise ControlError(410, "pre-auth code expired")
        return code

    def exclusive_elsewhere(self, authorizer_appid: str, component_appid: str) -> dict[int, str]:
        """Exclusive sets the account granted to other components: set id -> that component."""
        return {
            func_id: other.component_appid
            for other in self.authorizations.values()
            if other.authorizer_appid == authorizer_appid
            and other.component_appid != component_appid
            and other.live
            for func_id in EXCLUSIVE_SETS.intersection(other.func_ids)
        }

    def revoke(self, component_appid: str, authorizer_appid: str) -> Event:
        """The account cancels the authorization: refresh and access tokens die now."""
        authorization = self.authorizations.get((component_appid, authorizer_appid))
        if authorization is None or not authorization.live:
            raise ControlError(404, f"no live authorization of {authorizer_appid} to {component_appid}")
        authorization.live = False
        authorization.replaced_refresh_token = None
        now = self.now()
        self.tokens.retire_owner((component_appid, authorizer_appid), now)
        return Event(component_appid, "unauthorized", int(now), {"AuthorizerAppid": authorizer_appid})

    def seed_open_account(self, account: OpenAccount) -> None:
        """Create or replace an open account; its members must not be bound elsewhere."""
        for member in account.members:
            bound = self.open_account_of(member)
            if bound is not None and bound.open_appid != account.open_appid:
                raise ControlError(409, f"{member} is already bound to {bound.open_appid}")
        self.open_accounts[account.open_appid] = account

    def expire(self, what: str, appid: str | None) -> int:
        """Make tokens (``component``, ``authorizer``, ``jsapi`` tickets or ``all``) expire now."""
        now = self.now()
        count = 0
        if what in ("component", "authorizer", "all"):
            for token in self.tokens:
                is_component = token.authorizer_appid is None
                if what != "all" and is_component != (what == "component"):
                    continue
                if appid is None or appid in token.owner:
                    if token.state(now) == "valid":
                        count += 1
                    token.expires_at = min(token.expires_at, now)
        if what in ("jsapi", "all"):
            for authorizer in self.authorizers.values():
                if appid is None or appid == authorizer.appid:
                    for ticket_type, (ticket, expires_at) in authorizer.tickets.items():
                        if expires_at > now:
                            count += 1
                        authorizer.tickets[ticket_type] = (ticket, min(expires_at, now))
        return count

    def _put_authorizer(self, profile: AccountProfile) -> None:
        default_user_name = RELEASE_TEST_USER_NAMES.get(profile.authorizer_appid) or (
            "gh_" + hashlib.sha256(profile.authorizer_appid.encode()).hexdigest()[:12]
        )
        default_service_type = 0 if profile.kind == "mini_program" else 2  # 2: a service account
        profile = msgspec.structs.replace(
            profile,
            user_name=profile.user_name or default_user_name,
            service_type=default_service_type if profile.service_type is None else profile.service_type,
        )
        existing = self.authorizers.get(profile.authorizer_appid)
        followers = [_openid(profile.authorizer_appid, i) for i in range(profile.followers)]
        if existing is None:
            self.authorizers[profile.authorizer_appid] = Authorizer(profile, followers)
        else:
            existing.profile = profile
            existing.followers = followers

    def _grant(self, component_appid: str, authorizer_appid: str, func_ids: list[int], now: float) -> None:
        # re-granting after a revocation keeps the account's place in api_get_authorizer_list
        self.authorizations[(component_appid, authorizer_appid)] = Authorization(
            component_appid, authorizer_appid, sorted(set(func_ids)), _refresh_token(), int(now)
        )

    def _check_exclusive(self, authorizer_appid: str, component_appid: str, func_ids: list[int]) -> None:
        held = self.exclusive_elsewhere(authorizer_appid, component_appid)
        clash = sorted(set(func_ids) & set(held))
        if clash:
            raise ControlError(
                409,
                f"permission set {clash[0]} is exclusive and already granted by {authorizer_appid}"
                f" to {held[clash[0]]}",
            )


def _same(given: str, expected: str) -> bool:
    # bytes, because compare_digest refuses non-ASCII str and a caller may send anything
    return secrets.compare_digest(given.encode(), expected.encode())


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _refresh_token() -> str:
    return "refreshtoken@@@" + secrets.token_urlsafe(48)


def _openid(authorizer_appid: str, index: int) -> str:
    """A follower's openid: the user named ``str(index)`` (sns.user_openid), so OAuth logins of user
    "0" are the first follower."""
    return user_openid(authorizer_appid, str(index))


def _describe(profile: AccountProfile) -> wire.AuthorizerInfo:
    mini = profile.kind == "mini_program"
    return wire.AuthorizerInfo(
        nick_name=profile.nick_name,
        head_img=f"http://wx.qlogo.cn/mmopen/{profile.authorizer_appid}/0",
        service_type_info=wire.IdInfo(profile.service_type or 0),
        verify_type_info=wire.IdInfo(profile.verify_type),
        user_name=profile.user_name or "",
        alias="" if mini else profile.authorizer_appid,
        qrcode_url=f"http://mmbiz.qpic.cn/mmbiz_jpg/{profile.authorizer_appid}/0",
        principal_name=profile.principal_name,
        signature=f"{profile.nick_name}, simulated",
        business_info=wire.BusinessInfo(),
        account_status=1,
        mini_program_info=wire.MiniProgramInfo(
            network={
                "RequestDomain": [],
                "WsRequestDomain": [],
                "UploadDomain": [],
                "DownloadDomain": [],
                "UDPDomain": [],
            },
            categories=[{"first": "工具", "second": "效率"}],
        )
        if mini
        else None,
    )

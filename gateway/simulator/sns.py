"""User logins at the simulated WeChat: a mini program's ``wx.login`` code and an official account's web
OAuth, as a component performs them for an authorizer, and the user tokens they yield.

WeChat's client gives the user a code (``/sim/login-codes`` and ``/sim/oauth-codes`` play that part);
the component exchanges it, signed with its component_access_token:

- ``sns/component/jscode2session`` (D/oplatform/openApi/miniprogram-management/login/
  api_thirdpartycode2session): the mini program must have authorized the component (61003), no
  permission set is named;
- ``sns/oauth2/component/access_token`` and ``refresh_token`` (D/oplatform/Third-party_Platforms/2.0/api/
  Before_Develop/Official_Accounts/official_account_website_authorization.html): a code from the
  authorize page opened with that component_appid; set 4 (web service) required, as the gateway assumes;
- ``sns/userinfo`` and ``sns/auth`` with the user's access token (D/service/api/webdev/access/…).

An account's own ``sns/jscode2session`` and ``sns/oauth2/access_token`` take its appsecret; the
simulator holds none (its accounts are run by components), so any secret is 40125, as WeChat answers a
wrong one. Codes are single-use and live 5 minutes; user access tokens 2 hours, refresh tokens 30 days.
A user is named by a string; ``"0"`` is an official account's first follower (the same openid).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import msgspec

from gateway.simulator.errors import ControlError, WeChatError

if TYPE_CHECKING:
    from gateway.simulator.state import World

__all__ = [
    "CODE_TTL_S",
    "REFRESH_TTL_S",
    "USER_TOKEN_TTL_S",
    "AuthOk",
    "IssuedCode",
    "OAuthToken",
    "Scope",
    "Session",
    "UserInfo",
    "UserLogins",
    "user_openid",
]

CODE_TTL_S = 300  # wx.login codes and OAuth codes: "5分钟未被使用自动过期"
USER_TOKEN_TTL_S = 7200
REFRESH_TTL_S = 30 * 86400
WEB_SERVICE_SET = 4
LANGS = frozenset({"zh_CN", "zh_TW", "en"})

Scope = Literal["snsapi_base", "snsapi_userinfo"]


def user_openid(appid: str, user: str) -> str:
    """The openid of ``user`` at ``appid``: 28 characters like WeChat's; an account's followers are the
    users ``"0"``, ``"1"``, …"""
    return "o" + hashlib.sha256(f"{appid}/{user}".encode()).hexdigest()[:27]


# --- wire shapes ---------------------------------------------------------------------------------------


class IssuedCode(msgspec.Struct):
    """A code as WeChat's client hands it to a page or a mini program (control API)."""

    code: str
    expires_in: int
    openid: str


class Session(msgspec.Struct, omit_defaults=True):
    """sns/component/jscode2session: a mini-program user's session."""

    openid: str
    session_key: str
    unionid: str | None = None


class OAuthToken(msgspec.Struct):
    """sns/oauth2/component/access_token and refresh_token."""

    access_token: str
    expires_in: int
    refresh_token: str
    openid: str
    scope: str


class UserInfo(msgspec.Struct, omit_defaults=True):
    """sns/userinfo."""

    openid: str
    nickname: str
    sex: int
    province: str
    city: str
    country: str
    headimgurl: str
    privilege: list[str]
    unionid: str | None = None


class AuthOk(msgspec.Struct):
    errcode: int = 0
    errmsg: str = "ok"


# --- state ----------------------------------------------------------------------------------------------


@dataclass
class _Code:
    kind: Literal["js", "oauth"]
    appid: str
    component_appid: str | None  # the component_appid of the authorize page (OAuth codes)
    user: str
    scope: Scope
    expires_at: float
    used: bool = field(default=False, kw_only=True)


@dataclass
class _Grant:
    """A user's web OAuth grant to an account through a component: an access or a refresh token."""

    appid: str
    component_appid: str
    user: str
    scope: Scope
    expires_at: float


class UserLogins:
    """Codes, user tokens and the rules of the sns/* APIs."""

    def __init__(self, world: World) -> None:
        self._world = world
        self._codes: dict[str, _Code] = {}
        self._access: dict[str, _Grant] = {}
        self._refresh: dict[str, _Grant] = {}

    # --- control: what WeChat's client does --------------------------------------------------------

    def login_code(self, appid: str, user: str) -> IssuedCode:
        """``wx.login`` in mini program ``appid``."""
        self._account(appid, "mini_program")
        return self._issue(_Code("js", appid, None, user, "snsapi_base", self._expiry()))

    def oauth_code(self, appid: str, component_appid: str, user: str, scope: Scope) -> IssuedCode:
        """The user agrees on the authorize page opened for official account ``appid`` with
        ``component_appid``; WeChat redirects with this code. The page opens only for a live
        authorization of that component."""
        self._account(appid, "official_account")
        self._world.component(component_appid)
        authorization = self._world.authorizations.get((component_appid, appid))
        if authorization is None or not authorization.live:
            raise ControlError(409, f"{appid} has no live authorization to {component_appid}")
        return self._issue(_Code("oauth", appid, component_appid, user, scope, self._expiry()))

    # --- WeChat's API ------------------------------------------------------------------------------

    def component_jscode2session(self, token: str | None, query: Mapping[str, str]) -> Session:
        """sns/component/jscode2session: the unionid comes from the open account the mini program is
        bound to, if any."""
        component_appid = self._world.signed_by(token, query.get("component_appid", ""))
        appid = self._login_request(query, "authorization_code", "js_code", (41008,))
        self._live_authorization(component_appid, appid)
        code = self._redeem(query["js_code"], "js", appid, None)
        openid, unionid = user_openid(appid, code.user), self._unionid(appid, code.user)
        return Session(openid, secrets.token_urlsafe(16), unionid)

    def component_oauth_token(self, token: str | None, query: Mapping[str, str]) -> OAuthToken:
        """sns/oauth2/component/access_token: a code of this account's authorize page for this component."""
        component_appid = self._world.signed_by(token, query.get("component_appid", ""))
        appid = self._login_request(query, "authorization_code", "code", (41008,))
        self._web_service(component_appid, appid)
        code = self._redeem(query["code"], "oauth", appid, component_appid)
        refresh = secrets.token_urlsafe(64)
        now = self._world.now()
        self._refresh[refresh] = _Grant(appid, component_appid, code.user, code.scope, now + REFRESH_TTL_S)
        return self._access_token(self._refresh[refresh], refresh)

    def component_oauth_refresh(self, token: str | None, query: Mapping[str, str]) -> OAuthToken:
        """sns/oauth2/component/refresh_token: a new access token; the refresh token stays the same."""
        component_appid = self._world.signed_by(token, query.get("component_appid", ""))
        appid = self._login_request(query, "refresh_token", "refresh_token", (41003, "refresh_token missing"))
        self._web_service(component_appid, appid)
        value = query["refresh_token"]
        grant = self._refresh.get(value)
        if grant is None or (grant.appid, grant.component_appid) != (appid, component_appid):
            raise WeChatError(40030)
        if self._world.now() >= grant.expires_at:
            raise WeChatError(42002)
        return self._access_token(grant, value)

    def plain_login(self, query: Mapping[str, str]) -> msgspec.Struct:
        """An account's own sns/jscode2session or sns/oauth2/access_token: its appsecret, which no
        secret sent here can be."""
        appid = query.get("appid", "")
        if not appid:
            raise WeChatError(41002)
        if not query.get("secret"):
            raise WeChatError(41004)
        if appid not in self._world.authorizers:
            raise WeChatError(40013)
        raise WeChatError(40125)

    def plain_refresh(self, query: Mapping[str, str]) -> msgspec.Struct:
        """An account's own sns/oauth2/refresh_token: refresh tokens minted through a component are
        refreshed through it (assumed: no page says what the plain call answers for them)."""
        if not query.get("appid"):
            raise WeChatError(41002)
        if not query.get("refresh_token"):
            raise WeChatError(41003, "refresh_token missing")
        raise WeChatError(40030)

    def userinfo(self, token: str | None, query: Mapping[str, str]) -> UserInfo:
        """sns/userinfo: an access token of scope snsapi_userinfo, for this openid."""
        grant, openid = self._user_call(token, query)
        if grant.scope != "snsapi_userinfo":
            raise WeChatError(48001)
        lang = query.get("lang") or "zh_CN"
        if lang not in LANGS:
            raise WeChatError(40097)
        english = lang == "en"
        return UserInfo(
            openid=openid,
            nickname=f"User {grant.user}",
            sex=0,
            province="Guangdong" if english else "广东",
            city="Shenzhen" if english else "深圳",
            country="China" if english else "中国",
            headimgurl=f"https://thirdwx.qlogo.cn/mmopen/{openid}/132",
            privilege=[],
            unionid=self._unionid(grant.appid, grant.user),
        )

    def auth(self, token: str | None, query: Mapping[str, str]) -> AuthOk:
        """sns/auth: whether the user's access token is valid for this openid."""
        self._user_call(token, query)
        return AuthOk()

    # --- the pieces --------------------------------------------------------------------------------

    def _expiry(self) -> float:
        return self._world.now() + CODE_TTL_S

    def _issue(self, code: _Code) -> IssuedCode:
        value = secrets.token_urlsafe(24)
        self._codes[value] = code
        return IssuedCode(value, CODE_TTL_S, user_openid(code.appid, code.user))

    def _account(self, appid: str, kind: str) -> None:
        authorizer = self._world.authorizers.get(appid)
        if authorizer is None:
            raise ControlError(404, f"no authorizer {appid}")
        if authorizer.kind != kind:
            raise ControlError(409, f"{appid} is not a {kind.replace('_', ' ')}")

    @staticmethod
    def _login_request(
        query: Mapping[str, str], grant_type: str, code_param: str, missing: tuple[int] | tuple[int, str]
    ) -> str:
        """The appid of a well-formed login request, else WeChat's error."""
        appid = query.get("appid", "")
        if not appid:
            raise WeChatError(41002)
        if query.get("grant_type") != grant_type:
            raise WeChatError(40002)
        if not query.get(code_param):
            raise WeChatError(*missing)
        return appid

    def _live_authorization(self, component_appid: str, appid: str) -> list[int]:
        authorization = self._world.authorizations.get((component_appid, appid))
        if authorization is None or not authorization.live:
            raise WeChatError(61003)
        return authorization.func_ids

    def _web_service(self, component_appid: str, appid: str) -> None:
        if WEB_SERVICE_SET not in self._live_authorization(component_appid, appid):
            raise WeChatError(48001)

    def _redeem(self, value: str, kind: str, appid: str, component_appid: str | None) -> _Code:
        """A code issued for this account (and component): used once (40163), within 5 minutes (40029)."""
        code = self._codes.get(value)
        if code is None or (code.kind, code.appid, code.component_appid) != (kind, appid, component_appid):
            raise WeChatError(40029)
        if code.used:
            raise WeChatError(40163)
        if self._world.now() >= code.expires_at:
            raise WeChatError(40029)
        code.used = True
        return code

    def _access_token(self, grant: _Grant, refresh: str) -> OAuthToken:
        value = secrets.token_urlsafe(64)
        expires_at = self._world.now() + USER_TOKEN_TTL_S
        self._access[value] = _Grant(grant.appid, grant.component_appid, grant.user, grant.scope, expires_at)
        return OAuthToken(value, USER_TOKEN_TTL_S, refresh, user_openid(grant.appid, grant.user), grant.scope)

    def _user_call(self, token: str | None, query: Mapping[str, str]) -> tuple[_Grant, str]:
        if not token:
            raise WeChatError(41001)
        grant = self._access.get(token)
        if grant is None:
            raise WeChatError(40001)
        if self._world.now() >= grant.expires_at:
            raise WeChatError(42001)
        openid = query.get("openid", "")
        if not openid:
            raise WeChatError(41009)
        if openid != user_openid(grant.appid, grant.user):
            raise WeChatError(40003)
        return grant, openid

    def _unionid(self, appid: str, user: str) -> str | None:
        bound = self._world.open_account_of(appid)
        return user_openid(bound.open_appid, user) if bound is not None else None

"""Wire shapes of the simulated WeChat APIs: request bodies and success responses, as WeChat spells them.

Request bodies default every field so that a missing one reaches the rule that names WeChat's own error
(41004 for an empty secret, say) instead of a generic decoding failure; a field of the wrong type is 47001.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "AppidBody",
    "AuthorizationInfo",
    "AuthorizationSummary",
    "AuthorizerInfo",
    "AuthorizerInfoBody",
    "AuthorizerInfoResult",
    "AuthorizerList",
    "AuthorizerListBody",
    "AuthorizerListItem",
    "AuthorizerToken",
    "AuthorizerTokenBody",
    "Binary",
    "BusinessInfo",
    "ComponentAccessToken",
    "ComponentAppidBody",
    "ComponentTokenBody",
    "FollowerIds",
    "Followers",
    "FuncInfo",
    "HaveOpen",
    "IdInfo",
    "JsapiTicket",
    "MediaUploaded",
    "MenuView",
    "MiniProgramInfo",
    "Ok",
    "OpenAppid",
    "OpenBindBody",
    "PreAuthCode",
    "QueryAuthBody",
    "QueryAuthResult",
    "WxaCodeBody",
    "func_info",
]

# --- request bodies -----------------------------------------------------------------------------------


class ComponentTokenBody(msgspec.Struct):
    component_appid: str = ""
    component_appsecret: str = ""
    component_verify_ticket: str = ""


class ComponentAppidBody(msgspec.Struct):
    component_appid: str = ""


class QueryAuthBody(msgspec.Struct):
    component_appid: str = ""
    authorization_code: str = ""


class AuthorizerTokenBody(msgspec.Struct):
    component_appid: str = ""
    authorizer_appid: str = ""
    authorizer_refresh_token: str = ""


class AuthorizerInfoBody(msgspec.Struct):
    component_appid: str = ""
    authorizer_appid: str = ""


class AuthorizerListBody(msgspec.Struct):
    component_appid: str = ""
    offset: int = 0
    count: int = 0


class AppidBody(msgspec.Struct):
    appid: str = ""


class ClearQuotaV2Body(msgspec.Struct):
    component_appid: str = ""
    appsecret: str = ""
    appid: str = ""  # an authorizer; empty: the component itself


class OpenBindBody(msgspec.Struct):
    appid: str = ""
    open_appid: str = ""


class WxaCodeBody(msgspec.Struct):
    path: str = ""


# --- responses ----------------------------------------------------------------------------------------


class Ok(msgspec.Struct):
    errcode: int = 0
    errmsg: str = "ok"


class ComponentAccessToken(msgspec.Struct):
    component_access_token: str
    expires_in: int


class PreAuthCode(msgspec.Struct):
    pre_auth_code: str
    expires_in: int


class IdInfo(msgspec.Struct):
    id: int


class FuncInfo(msgspec.Struct):
    funcscope_category: IdInfo


def func_info(func_ids: list[int]) -> list[FuncInfo]:
    """``func_info`` as WeChat lists granted permission sets."""
    return [FuncInfo(IdInfo(func_id)) for func_id in func_ids]


class AuthorizationInfo(msgspec.Struct):
    authorizer_appid: str
    authorizer_access_token: str
    expires_in: int
    authorizer_refresh_token: str
    func_info: list[FuncInfo]


class QueryAuthResult(msgspec.Struct):
    authorization_info: AuthorizationInfo


class AuthorizerToken(msgspec.Struct):
    authorizer_access_token: str
    expires_in: int
    authorizer_refresh_token: str


class BusinessInfo(msgspec.Struct):
    open_pay: int = 0
    open_shake: int = 0
    open_scan: int = 0
    open_card: int = 0
    open_store: int = 0


class MiniProgramInfo(msgspec.Struct):
    network: dict[str, list[str]]
    categories: list[dict[str, str]]
    visit_status: int = 0


class AuthorizerInfo(msgspec.Struct, omit_defaults=True):
    nick_name: str
    head_img: str
    service_type_info: IdInfo
    verify_type_info: IdInfo
    user_name: str
    alias: str
    qrcode_url: str
    principal_name: str
    signature: str
    business_info: BusinessInfo
    account_status: int  # 1: normal
    # present only for mini programs: its presence is how callers tell the two kinds apart
    mini_program_info: MiniProgramInfo | None = msgspec.field(default=None, name="MiniProgramInfo")


class AuthorizationSummary(msgspec.Struct):
    authorizer_appid: str
    authorizer_refresh_token: str
    func_info: list[FuncInfo]


class AuthorizerInfoResult(msgspec.Struct):
    authorizer_info: AuthorizerInfo
    authorization_info: AuthorizationSummary


class AuthorizerListItem(msgspec.Struct):
    authorizer_appid: str
    refresh_token: str
    auth_time: int


class AuthorizerList(msgspec.Struct):
    total_count: int
    items: list[AuthorizerListItem] = msgspec.field(name="list")


class OpenAppid(msgspec.Struct):
    open_appid: str
    errcode: int = 0
    errmsg: str = "ok"


class HaveOpen(msgspec.Struct):
    have_open: bool
    errcode: int = 0
    errmsg: str = "ok"


class FollowerIds(msgspec.Struct):
    openid: list[str]


class Followers(msgspec.Struct, omit_defaults=True, kw_only=True):
    total: int
    count: int
    data: FollowerIds | None = None  # WeChat leaves it out of an empty page
    next_openid: str


class JsapiTicket(msgspec.Struct):
    ticket: str
    expires_in: int
    errcode: int = 0
    errmsg: str = "ok"


class MenuView(msgspec.Struct):
    menu: dict[str, Any]


class MediaUploaded(msgspec.Struct):
    type: str
    media_id: str
    created_at: int


class Binary(msgspec.Struct):
    """A non-JSON answer: an image or a downloaded media file."""

    content: bytes
    media_type: str
    filename: str | None = None

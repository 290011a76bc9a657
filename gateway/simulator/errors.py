"""The simulator's two kinds of refusal.

WeChatError    what WeChat itself answers: HTTP 200 with ``{"errcode", "errmsg": "... rid: ..."}``
ControlError   a refused /sim control call (unknown component, used pre-auth code …): HTTP 4xx
"""

from __future__ import annotations

import secrets

import msgspec

__all__ = ["ERRMSG", "ControlError", "WeChatError", "WeChatErrorBody"]

# WeChat's own wording for every code the simulator answers.
ERRMSG: dict[int, str] = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40003: "invalid openid",
    40004: "invalid media type",
    40007: "invalid media_id",
    40008: "invalid message type",
    40002: "invalid grant_type",
    40013: "invalid appid",
    40029: "invalid code",
    40030: "invalid refresh_token",
    40016: "invalid button size",
    40066: "invalid url",
    40097: "invalid args",
    40125: "invalid appsecret",
    40163: "code been used",
    40170: "args count exceed count limit",
    41001: "access_token missing",
    41002: "appid missing",
    41003: "refresh_token missing",
    41004: "appsecret missing",
    41005: "media data missing",
    41008: "missing code",
    41009: "missing openid",
    42001: "access_token expired",
    42002: "refresh_token expired",
    43001: "require GET method",
    43002: "require POST method",
    45009: "reach max api daily quota limit",
    46003: "menu no exist",
    47001: "data format error",
    48001: "api unauthorized",
    48006: "forbid to clear quota because of reaching the limit",
    61003: "component is not authorized by this account",
    61005: "component ticket is expired",
    61006: "component ticket is invalid",
    61009: "code is invalid",
    61010: "code is expired",
    61011: "invalid component",
    61023: "refresh_token is invalid",
    89000: "account has bound open",
    89001: "not same contractor",
    89002: "open not exists",
    89003: "open is not created by api",
    89004: "open's appid has reached the limit",
    89036: "open is not created by api or not verified",
}


class WeChatErrorBody(msgspec.Struct):
    """The JSON WeChat answers on failure."""

    errcode: int
    errmsg: str


class WeChatError(Exception):
    """A refusal in WeChat's terms; ``errmsg`` defaults to WeChat's wording of ``errcode``."""

    def __init__(self, errcode: int, errmsg: str | None = None) -> None:
        self.errcode = errcode
        self.errmsg = errmsg or ERRMSG.get(errcode, "system error")
        super().__init__(f"{errcode} {self.errmsg}")

    def body(self) -> WeChatErrorBody:
        """The response body, with a fresh request id appended as WeChat does."""
        rid = "-".join(secrets.token_hex(4) for _ in range(3))
        return WeChatErrorBody(self.errcode, f"{self.errmsg} rid: {rid}")


class ControlError(Exception):
    """A control-API call the simulator refuses; answered as ``{"status_code", "detail"}``."""

    def __init__(self, status: int, detail: str) -> None:
        self.status = status
        self.detail = detail
        super().__init__(f"{status} {detail}")

"""What the simulator tests share: two components, a push inbox, a settable clock, and a client with
shortcuts for the usual steps (ticket, component token, seeding, authorizer token)."""

from __future__ import annotations

from typing import Any

import httpx
from wechatpy.crypto import WeChatCrypto

from gateway.simulator import SimComponent
from gateway.xml import flatten, parse_xml

RETAIL = SimComponent(
    appid="wxc0mp000000001",
    secret="retail-appsecret",
    token="retailtoken",
    encoding_aes_key="abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
    event_url="http://gateway.test/wechat/retail/events",
    message_url="http://gateway.test/wechat/retail/messages/$APPID$",
    auth_domain="gateway.test",
)
FINANCE = SimComponent(
    appid="wxc0mp000000002",
    secret="finance-appsecret",
    token="financetoken",
    encoding_aes_key="kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR",
    event_url="http://gateway.test/wechat/finance/events",
    auth_domain="gateway.test",
)
COMPONENTS = {c.appid: c for c in (RETAIL, FINANCE)}
START = 1_750_000_000.0


class Clock:
    """A clock that only moves when told to (the simulator adds its own /sim/clock offset on top)."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Inbox:
    """The receiving end of pushes: records each request and answers ``reply`` (or raises ``fail``)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.reply = httpx.Response(200, text="success")
        self.fail: Exception | None = None

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.fail is not None:
            raise self.fail
        return self.reply

    def decrypt(self, index: int = -1) -> dict[str, str]:
        """The decrypted fields of a push, as wechatpy (an independent implementation) reads them."""
        request = self.requests[index]
        component = COMPONENTS[flatten(parse_xml(request.content))["AppId"]]
        crypto = WeChatCrypto(component.token, component.encoding_aes_key, component.appid)
        params = request.url.params
        plain = crypto.decrypt_message(
            request.content.decode(), params["msg_signature"], params["timestamp"], params["nonce"]
        )
        return flatten(parse_xml(plain))


class Sim:
    """An HTTP client of the simulator with shortcuts; every call goes through the real app."""

    def __init__(self, client: httpx.AsyncClient, inbox: Inbox, clock: Clock) -> None:
        self.client = client
        self.inbox = inbox
        self.clock = clock

    async def control(self, method: str, path: str, body: Any = None, expect: int | None = None) -> Any:
        """Call /sim; asserts a 2xx answer unless ``expect`` names the status."""
        response = await self.client.request(method, "/sim" + path, json=body)
        if expect is None:
            assert response.is_success, response.text
        else:
            assert response.status_code == expect, response.text
        return response.json()

    async def wechat(
        self,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        param: str = "access_token",
        method: str = "POST",
        **query: str,
    ) -> dict[str, Any]:
        """Call a WeChat API; WeChat answers errors with HTTP 200 too."""
        params = dict(query)
        if token is not None:
            params[param] = token
        response = await self.client.request(method, path, params=params, json=body)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def errcode(self, path: str, body: Any = None, **kwargs: Any) -> int:
        """The errcode of a call that must fail, after checking WeChat's errmsg shape."""
        result = await self.wechat(path, body, **kwargs)
        assert " rid: " in result.get("errmsg", ""), result
        errcode: int = result["errcode"]
        return errcode

    async def ticket(self, component: SimComponent = RETAIL) -> str:
        pushed = await self.control("POST", f"/components/{component.appid}/push-ticket")
        ticket: str = pushed["ticket"]
        return ticket

    async def component_token(self, component: SimComponent = RETAIL) -> str:
        body = {
            "component_appid": component.appid,
            "component_appsecret": component.secret,
            "component_verify_ticket": await self.ticket(component),
        }
        result = await self.wechat("/cgi-bin/component/api_component_token", body)
        token: str = result["component_access_token"]
        return token

    async def seed(
        self,
        appid: str,
        grants: dict[str, list[int]],
        *,
        kind: str = "official_account",
        principal: str = "ACME Retail Co., Ltd.",
        **profile: Any,
    ) -> dict[str, str]:
        """Seed an account with ``grants`` (component appid -> func ids); returns the refresh tokens."""
        body = {
            "authorizer_appid": appid,
            "kind": kind,
            "nick_name": f"Account {appid}",
            "principal_name": principal,
        }
        body |= profile | {"components": grants}
        seeded = await self.control("POST", "/authorizers", body)
        tokens: dict[str, str] = seeded["refresh_tokens"]
        return tokens

    async def authorizer_token(self, appid: str, refresh_token: str, component: SimComponent = RETAIL) -> str:
        body = {
            "component_appid": component.appid,
            "authorizer_appid": appid,
            "authorizer_refresh_token": refresh_token,
        }
        result = await self.wechat(
            "/cgi-bin/component/api_authorizer_token", body, token=await self.component_token(component)
        )
        token: str = result["authorizer_access_token"]
        return token

    async def account(
        self, appid: str, func_ids: list[int], *, kind: str = "official_account", **profile: Any
    ) -> str:
        """Seed an account authorized to RETAIL and return an authorizer_access_token for it."""
        refresh = await self.seed(appid, {RETAIL.appid: func_ids}, kind=kind, **profile)
        return await self.authorizer_token(appid, refresh[RETAIL.appid])

    async def advance(self, seconds: float) -> None:
        await self.control("POST", "/clock/advance", {"seconds": seconds})

"""User logins at the simulated WeChat (gateway.simulator.sns): codes from the control API, exchanged by
a component for a mini program (jscode2session) or an official account (web OAuth), and the user's own
token at sns/userinfo and sns/auth."""

from __future__ import annotations

from typing import Any

import pytest

from tests.simulator.helpers import FINANCE, RETAIL, Sim

OA = "wxa0000000000001"
MINI = "wxc0000000000003"


async def oauth_code(
    sim: Sim, scope: str = "snsapi_userinfo", component: str = RETAIL.appid, **more: str
) -> Any:
    body = {"authorizer_appid": OA, "component_appid": component, "scope": scope} | more
    return await sim.control("POST", "/oauth-codes", body)


@pytest.fixture
async def signed(sim: Sim) -> tuple[Sim, str]:
    """OA authorized to RETAIL with web service (4), MINI with mini-program codes (17) only; RETAIL's
    component_access_token."""
    await sim.seed(OA, {RETAIL.appid: [1, 4]})
    await sim.seed(MINI, {RETAIL.appid: [17]}, kind="mini_program")
    return sim, await sim.component_token()


def oauth_query(token: str, code: str, **more: str) -> dict[str, str]:
    return {
        "component_access_token": token,
        "appid": OA,
        "code": code,
        "grant_type": "authorization_code",
        "component_appid": RETAIL.appid,
    } | more


async def get(sim: Sim, path: str, **query: str) -> dict[str, Any]:
    response = await sim.client.get(path, params=query)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_web_oauth_code_token_refresh_userinfo_and_auth(signed: tuple[Sim, str]) -> None:
    sim, token = signed
    code = await oauth_code(sim, user="0")
    granted = await get(sim, "/sns/oauth2/component/access_token", **oauth_query(token, code["code"]))
    assert set(granted) == {"access_token", "expires_in", "refresh_token", "openid", "scope"}
    assert granted["openid"] == code["openid"] and granted["expires_in"] == 7200
    followers = await sim.wechat("/cgi-bin/user/get", token=await sim.account(OA, [1, 2, 4]), method="GET")
    assert granted["openid"] == followers["data"]["openid"][0]  # user "0" is the first follower
    user = {"access_token": granted["access_token"], "openid": granted["openid"]}
    info = await get(sim, "/sns/userinfo", **user, lang="zh_CN")
    assert info["openid"] == granted["openid"] and info["nickname"] == "User 0" and "unionid" not in info
    assert await get(sim, "/sns/auth", **user) == {"errcode": 0, "errmsg": "ok"}
    refreshed = await get(
        sim,
        "/sns/oauth2/component/refresh_token",
        component_access_token=token,
        appid=OA,
        grant_type="refresh_token",
        component_appid=RETAIL.appid,
        refresh_token=granted["refresh_token"],
    )
    assert refreshed["refresh_token"] == granted["refresh_token"]
    assert refreshed["access_token"] != granted["access_token"]


async def test_an_oauth_code_is_single_use_and_expires(signed: tuple[Sim, str]) -> None:
    sim, token = signed
    code = (await oauth_code(sim))["code"]
    assert "access_token" in await get(sim, "/sns/oauth2/component/access_token", **oauth_query(token, code))
    assert (
        await sim.errcode("/sns/oauth2/component/access_token", method="GET", **oauth_query(token, code))
        == 40163
    )
    late = (await oauth_code(sim))["code"]
    await sim.advance(301)
    token = await sim.component_token()
    assert (
        await sim.errcode("/sns/oauth2/component/access_token", method="GET", **oauth_query(token, late))
        == 40029
    )


@pytest.mark.parametrize(
    ("change", "errcode"),
    [
        ({"component_appid": FINANCE.appid}, 40013),  # not the token's component
        ({"component_access_token": "forged"}, 40001),
        ({"component_access_token": ""}, 41001),
        ({"grant_type": "refresh_token"}, 40002),
        ({"code": ""}, 41008),
        ({"appid": ""}, 41002),
        ({"appid": MINI}, 48001),  # MINI granted no set 4
        ({"code": "made-up"}, 40029),
    ],
)
async def test_oauth_token_refusals(signed: tuple[Sim, str], change: dict[str, str], errcode: int) -> None:
    sim, token = signed
    code = (await oauth_code(sim))["code"]
    query = oauth_query(token, code) | change
    assert await sim.errcode("/sns/oauth2/component/access_token", method="GET", **query) == errcode


async def test_a_code_for_another_component_or_account_is_invalid(signed: tuple[Sim, str]) -> None:
    sim, token = signed
    await sim.seed(OA, {RETAIL.appid: [1, 4], FINANCE.appid: [2]})
    other_component = (await oauth_code(sim, component=FINANCE.appid))["code"]
    query = oauth_query(token, other_component)
    assert await sim.errcode("/sns/oauth2/component/access_token", method="GET", **query) == 40029
    js_code = (await sim.control("POST", "/login-codes", {"authorizer_appid": MINI}))["code"]
    query = oauth_query(token, js_code)
    assert await sim.errcode("/sns/oauth2/component/access_token", method="GET", **query) == 40029


async def test_web_oauth_needs_set_4(sim: Sim) -> None:
    await sim.seed(OA, {RETAIL.appid: [1]})
    token = await sim.component_token()
    code = (await oauth_code(sim))["code"]
    assert (
        await sim.errcode("/sns/oauth2/component/access_token", method="GET", **oauth_query(token, code))
        == 48001
    )


async def test_refresh_refusals(signed: tuple[Sim, str]) -> None:
    sim, token = signed
    code = (await oauth_code(sim))["code"]
    granted = await get(sim, "/sns/oauth2/component/access_token", **oauth_query(token, code))
    query = {
        "component_access_token": token,
        "appid": OA,
        "grant_type": "refresh_token",
        "component_appid": RETAIL.appid,
        "refresh_token": "made-up",
    }
    assert await sim.errcode("/sns/oauth2/component/refresh_token", method="GET", **query) == 40030
    query["refresh_token"] = ""
    assert await sim.errcode("/sns/oauth2/component/refresh_token", method="GET", **query) == 41003
    query["refresh_token"] = granted["refresh_token"]
    await sim.advance(30 * 86400 + 1)
    query["component_access_token"] = await sim.component_token()
    assert await sim.errcode("/sns/oauth2/component/refresh_token", method="GET", **query) == 42002


async def test_userinfo_and_auth_refusals(signed: tuple[Sim, str]) -> None:
    sim, token = signed
    base = (await oauth_code(sim, scope="snsapi_base"))["code"]
    base_token = await get(sim, "/sns/oauth2/component/access_token", **oauth_query(token, base))
    user = {"access_token": base_token["access_token"], "openid": base_token["openid"]}
    assert await sim.errcode("/sns/userinfo", method="GET", **user) == 48001  # snsapi_base: openid only
    assert (await get(sim, "/sns/auth", **user))["errcode"] == 0
    full = (await oauth_code(sim))["code"]
    granted = await get(sim, "/sns/oauth2/component/access_token", **oauth_query(token, full))
    user = {"access_token": granted["access_token"], "openid": granted["openid"]}
    assert await sim.errcode("/sns/userinfo", method="GET", **user, lang="fr") == 40097
    assert await sim.errcode("/sns/userinfo", method="GET", **(user | {"openid": "o-other"})) == 40003
    assert await sim.errcode("/sns/userinfo", method="GET", **(user | {"openid": ""})) == 41009
    assert await sim.errcode("/sns/auth", method="GET", **(user | {"access_token": "made-up"})) == 40001
    await sim.advance(7201)
    assert await sim.errcode("/sns/auth", method="GET", **user) == 42001


async def test_jscode2session_needs_only_an_authorization(signed: tuple[Sim, str]) -> None:
    sim, token = signed
    await sim.control(
        "POST", "/open-accounts", {"open_appid": "wx0pen0000000001", "principal_name": "P", "members": [MINI]}
    )
    code = await sim.control("POST", "/login-codes", {"authorizer_appid": MINI, "user": "alice"})
    query = {
        "component_access_token": token,
        "appid": MINI,
        "js_code": code["code"],
        "grant_type": "authorization_code",
        "component_appid": RETAIL.appid,
    }
    session = await get(sim, "/sns/component/jscode2session", **query)  # MINI granted 17 only, no 18
    assert session["openid"] == code["openid"] and session["session_key"]
    assert session["unionid"]  # bound to an open account
    assert await sim.errcode("/sns/component/jscode2session", method="GET", **query) == 40163
    query["js_code"] = (await sim.control("POST", "/login-codes", {"authorizer_appid": MINI}))["code"]
    finance = await sim.component_token(FINANCE)
    refused = query | {"component_access_token": finance, "component_appid": FINANCE.appid}
    assert await sim.errcode("/sns/component/jscode2session", method="GET", **refused) == 61003
    assert (
        await sim.errcode("/sns/component/jscode2session", method="GET", **(query | {"js_code": ""})) == 41008
    )


@pytest.mark.parametrize("path", ["/sns/jscode2session", "/sns/oauth2/access_token"])
async def test_an_accounts_own_login_refuses_any_secret(signed: tuple[Sim, str], path: str) -> None:
    sim, _ = signed
    query = {
        "appid": MINI,
        "secret": "a-client-key",
        "js_code": "c",
        "code": "c",
        "grant_type": "authorization_code",
    }
    assert await sim.errcode(path, method="GET", **query) == 40125
    assert await sim.errcode(path, method="GET", **(query | {"secret": ""})) == 41004
    assert await sim.errcode(path, method="GET", **(query | {"appid": "wxnobody00000001"})) == 40013


async def test_code_control_refusals(signed: tuple[Sim, str]) -> None:
    sim, _ = signed
    await sim.control("POST", "/login-codes", {"authorizer_appid": OA}, expect=409)  # not a mini program
    await sim.control("POST", "/login-codes", {"authorizer_appid": "wxnobody00000001"}, expect=404)
    await sim.control(
        "POST", "/oauth-codes", {"authorizer_appid": MINI, "component_appid": RETAIL.appid}, expect=409
    )
    body = {"authorizer_appid": OA, "component_appid": FINANCE.appid}
    await sim.control("POST", "/oauth-codes", body, expect=409)  # OA has not authorized FINANCE
    await sim.control("POST", "/oauth-codes", body | {"scope": "snsapi_login"}, expect=400)


async def test_requests_records_what_arrived(signed: tuple[Sim, str]) -> None:
    sim, _ = signed
    await sim.client.get("/sns/jscode2session", params={"appid": MINI, "secret": "s3cret"})
    last = (await sim.control("GET", "/requests"))["requests"][-1]
    assert last == {
        "endpoint": "sns/jscode2session",
        "method": "GET",
        "query": {"appid": MINI, "secret": "s3cret"},
    }

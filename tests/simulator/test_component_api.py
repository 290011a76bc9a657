"""Component APIs: tickets, tokens and their overlap, pre-auth and authorization codes, refresh tokens."""

from __future__ import annotations

from typing import Any

import pytest

from tests.simulator.helpers import FINANCE, RETAIL, Sim

TOKEN_URL = "/cgi-bin/component/api_component_token"
PRE_AUTH_URL = "/cgi-bin/component/api_create_preauthcode"
QUERY_AUTH_URL = "/cgi-bin/component/api_query_auth"
AUTHORIZER_TOKEN_URL = "/cgi-bin/component/api_authorizer_token"
INFO_URL = "/cgi-bin/component/api_get_authorizer_info"
LIST_URL = "/cgi-bin/component/api_get_authorizer_list"
OA = "wxa0000000000001"
MP = "wxb0000000000002"


def token_body(ticket: str, *, appid: str = RETAIL.appid, secret: str = RETAIL.secret) -> dict[str, str]:
    return {"component_appid": appid, "component_appsecret": secret, "component_verify_ticket": ticket}


async def approve(sim: Sim, token: str, func_ids: list[int], appid: str = OA, **extra: Any) -> dict[str, Any]:
    pre = await sim.wechat(PRE_AUTH_URL, {"component_appid": RETAIL.appid}, token=token)
    body = {"authorizer_appid": appid, "func_ids": func_ids} | extra
    approved: dict[str, Any] = await sim.control(
        "POST", f"/pre-auth-codes/{pre['pre_auth_code']}/approve", body
    )
    return approved


async def test_component_token_is_minted_from_a_pushed_ticket(sim: Sim) -> None:
    result = await sim.wechat(TOKEN_URL, token_body(await sim.ticket()))
    assert set(result) == {"component_access_token", "expires_in"}
    assert result["expires_in"] == 7200


@pytest.mark.parametrize(
    ("change", "errcode"),
    [
        ({"component_appid": "wxc0mp000000099"}, 61011),
        ({"component_appsecret": ""}, 41004),
        ({"component_appsecret": "wrong"}, 40125),
        ({"component_verify_ticket": "ticket@@@never-pushed"}, 61006),
    ],
)
async def test_component_token_refusals(sim: Sim, change: dict[str, str], errcode: int) -> None:
    body = token_body(await sim.ticket()) | change
    assert await sim.errcode(TOKEN_URL, body) == errcode


async def test_a_ticket_pushed_to_another_component_is_invalid(sim: Sim) -> None:
    assert await sim.errcode(TOKEN_URL, token_body(await sim.ticket(FINANCE))) == 61006


async def test_every_ticket_of_the_last_12_hours_is_valid_then_61005(sim: Sim) -> None:
    old = await sim.ticket()
    await sim.advance(6 * 3600)
    await sim.ticket()  # a newer ticket does not invalidate the old one
    assert "component_access_token" in await sim.wechat(TOKEN_URL, token_body(old))
    await sim.advance(6 * 3600 + 1)
    assert await sim.errcode(TOKEN_URL, token_body(old)) == 61005
    shown = await sim.control("GET", f"/components/{RETAIL.appid}")
    assert [t["valid"] for t in shown["tickets"]] == [True, False]


async def test_token_query_parameter_missing_unknown_and_both_names(sim: Sim) -> None:
    body = {"component_appid": RETAIL.appid}
    assert await sim.errcode(PRE_AUTH_URL, body) == 41001
    assert await sim.errcode(PRE_AUTH_URL, body, token="no-such-token") == 40001
    token = await sim.component_token()
    for param in ("component_access_token", "access_token"):
        result = await sim.wechat(PRE_AUTH_URL, body, token=token, param=param)
        assert result["expires_in"] == 600


async def test_component_appid_must_be_the_tokens(sim: Sim) -> None:
    token = await sim.component_token()
    assert await sim.errcode(PRE_AUTH_URL, {"component_appid": FINANCE.appid}, token=token) == 40013
    assert await sim.errcode(PRE_AUTH_URL, {}, token=token) == 41002


async def test_malformed_or_mistyped_body_is_47001(sim: Sim) -> None:
    token = await sim.component_token()
    response = await sim.client.post(PRE_AUTH_URL, params={"access_token": token}, content=b"{not json")
    assert response.json()["errcode"] == 47001
    assert await sim.errcode(PRE_AUTH_URL, {"component_appid": 42}, token=token) == 47001


async def test_previous_component_token_overlaps_then_40001_and_expiry_is_42001(sim: Sim) -> None:
    first = await sim.component_token()
    second = await sim.component_token()
    body = {"component_appid": RETAIL.appid}
    assert "pre_auth_code" in await sim.wechat(PRE_AUTH_URL, body, token=first)
    await sim.advance(301)  # past token_overlap_s
    assert await sim.errcode(PRE_AUTH_URL, body, token=first) == 40001
    assert "pre_auth_code" in await sim.wechat(PRE_AUTH_URL, body, token=second)
    await sim.advance(7200)
    assert await sim.errcode(PRE_AUTH_URL, body, token=second) == 42001


async def test_sim_expire_makes_component_tokens_42001(sim: Sim) -> None:
    retail, finance = await sim.component_token(), await sim.component_token(FINANCE)
    assert (await sim.control("POST", "/expire", {"what": "component", "appid": RETAIL.appid}))["count"] == 1
    assert await sim.errcode(PRE_AUTH_URL, {"component_appid": RETAIL.appid}, token=retail) == 42001
    assert "pre_auth_code" in await sim.wechat(
        PRE_AUTH_URL, {"component_appid": FINANCE.appid}, token=finance
    )
    shown = await sim.control("GET", f"/components/{RETAIL.appid}")
    assert [t["state"] for t in shown["component_tokens"]] == ["expired"]


async def test_an_authorizer_token_cannot_call_component_apis(sim: Sim) -> None:
    access = await sim.account(OA, [1])
    assert await sim.errcode(PRE_AUTH_URL, {"component_appid": RETAIL.appid}, token=access) == 48001


async def test_pre_auth_code_is_single_use_and_expires(sim: Sim) -> None:
    token = await sim.component_token()
    await sim.seed(OA, {})
    body = {"authorizer_appid": OA, "func_ids": [1]}
    codes = [
        (await sim.wechat(PRE_AUTH_URL, {"component_appid": RETAIL.appid}, token=token))["pre_auth_code"]
        for _ in range(2)
    ]
    await sim.control("POST", f"/pre-auth-codes/{codes[0]}/approve", body)
    await sim.control("POST", f"/pre-auth-codes/{codes[0]}/approve", body, expect=409)
    await sim.advance(601)
    await sim.control("POST", f"/pre-auth-codes/{codes[1]}/approve", body, expect=410)
    await sim.control("POST", "/pre-auth-codes/preauthcode@@@unknown/approve", body, expect=404)


async def test_approve_needs_a_known_account_or_its_profile(sim: Sim) -> None:
    token = await sim.component_token()
    pre = (await sim.wechat(PRE_AUTH_URL, {"component_appid": RETAIL.appid}, token=token))["pre_auth_code"]
    await sim.control(
        "POST", f"/pre-auth-codes/{pre}/approve", {"authorizer_appid": OA, "func_ids": [1]}, expect=404
    )
    approved = await sim.control(
        "POST",
        f"/pre-auth-codes/{pre}/approve",
        {
            "authorizer_appid": OA,
            "func_ids": [1],
            "kind": "official_account",
            "nick_name": "New",
            "principal_name": "ACME",
            "redirect_uri": "https://gw.example/wechat/retail/authorized?x=1",
        },
    )
    assert approved["redirect_url"].startswith("https://gw.example/wechat/retail/authorized?x=1&auth_code=")
    assert approved["redirect_url"].endswith("&expires_in=600")
    state = await sim.control("GET", "/state")
    assert [(a["authorizer_appid"], a["nick_name"]) for a in state["authorizers"]] == [(OA, "New")]


async def test_query_auth_answers_authorization_info_once(sim: Sim) -> None:
    token = await sim.component_token()
    await sim.seed(OA, {})
    code = (await approve(sim, token, [1, 2, 24]))["auth_code"]
    result = await sim.wechat(
        QUERY_AUTH_URL, {"component_appid": RETAIL.appid, "authorization_code": code}, token=token
    )
    info = result["authorization_info"]
    assert info["authorizer_appid"] == OA
    assert info["expires_in"] == 7200
    assert info["authorizer_access_token"]
    assert info["authorizer_refresh_token"].startswith("refreshtoken@@@")
    assert info["func_info"] == [{"funcscope_category": {"id": n}} for n in (1, 2, 24)]
    again = {"component_appid": RETAIL.appid, "authorization_code": code}
    assert await sim.errcode(QUERY_AUTH_URL, again, token=token) == 61009
    unknown = {"component_appid": RETAIL.appid, "authorization_code": "queryauthcode@@@nope"}
    assert await sim.errcode(QUERY_AUTH_URL, unknown, token=token) == 61009


@pytest.mark.parametrize("func_ids", [[1, 2, 24, 15], [1, 2, 24]])  # more sets, or the same again
async def test_a_reauthorization_kills_the_accounts_tokens_at_once(sim: Sim, func_ids: list[int]) -> None:
    token = await sim.component_token()
    await sim.seed(OA, {})

    async def exchange(code: str) -> dict[str, Any]:
        body = {"component_appid": RETAIL.appid, "authorization_code": code}
        info: dict[str, Any] = (await sim.wechat(QUERY_AUTH_URL, body, token=token))["authorization_info"]
        return info

    first = await exchange((await approve(sim, token, [1, 2, 24]))["auth_code"])
    refreshed = await sim.authorizer_token(OA, first["authorizer_refresh_token"])
    for live in (first["authorizer_access_token"], refreshed):
        assert "total" in await sim.wechat("/cgi-bin/user/get", token=live, method="GET")
    code = (await approve(sim, token, func_ids))["auth_code"]
    # Killed when the administrator approves, not after the 5-minute overlap of a renewal.
    for dead in (first["authorizer_access_token"], refreshed):
        assert await sim.errcode("/cgi-bin/user/get", token=dead, method="GET") == 40001
    second = await exchange(code)
    assert "total" in await sim.wechat(
        "/cgi-bin/user/get", token=second["authorizer_access_token"], method="GET"
    )


async def test_query_auth_code_expires_and_belongs_to_its_component(sim: Sim) -> None:
    token = await sim.component_token()
    await sim.seed(OA, {})
    code = (await approve(sim, token, [1]))["auth_code"]
    finance = await sim.component_token(FINANCE)
    other = {"component_appid": FINANCE.appid, "authorization_code": code}
    assert await sim.errcode(QUERY_AUTH_URL, other, token=finance) == 61009
    await sim.advance(601)
    token = await sim.component_token()
    body = {"component_appid": RETAIL.appid, "authorization_code": code}
    assert await sim.errcode(QUERY_AUTH_URL, body, token=token) == 61010


async def test_authorizer_token_refresh_overlap_and_61023_after_revoke(sim: Sim) -> None:
    refresh = (await sim.seed(OA, {RETAIL.appid: [1, 2]}))[RETAIL.appid]
    token = await sim.component_token()
    body = {"component_appid": RETAIL.appid, "authorizer_appid": OA, "authorizer_refresh_token": refresh}
    first = await sim.wechat(AUTHORIZER_TOKEN_URL, body, token=token)
    assert first["expires_in"] == 7200
    assert first["authorizer_refresh_token"] == refresh  # refresh tokens do not rotate on refresh
    second = await sim.wechat(AUTHORIZER_TOKEN_URL, body, token=token)
    assert "total" in await sim.wechat(
        "/cgi-bin/user/get", token=first["authorizer_access_token"], method="GET"
    )
    await sim.advance(301)
    old = first["authorizer_access_token"]
    assert await sim.errcode("/cgi-bin/user/get", token=old, method="GET") == 40001
    assert "total" in await sim.wechat(
        "/cgi-bin/user/get", token=second["authorizer_access_token"], method="GET"
    )

    await sim.control(
        "POST", "/authorizations/revoke", {"component_appid": RETAIL.appid, "authorizer_appid": OA}
    )
    token = await sim.component_token()
    assert await sim.errcode(AUTHORIZER_TOKEN_URL, body, token=token) == 61023
    new = second["authorizer_access_token"]
    assert await sim.errcode("/cgi-bin/user/get", token=new, method="GET") == 40001
    state = await sim.control("GET", "/state")
    assert [a["status"] for a in state["authorizations"]] == ["revoked"]


async def test_reauthorization_changes_the_refresh_token_with_a_5_minute_transition(sim: Sim) -> None:
    old = (await sim.seed(OA, {RETAIL.appid: [1]}))[RETAIL.appid]
    token = await sim.component_token()
    await approve(sim, token, [1, 2])
    body = {"component_appid": RETAIL.appid, "authorizer_appid": OA, "authorizer_refresh_token": old}
    during = await sim.wechat(AUTHORIZER_TOKEN_URL, body, token=token)
    assert during["authorizer_refresh_token"] != old  # the answer carries the new one
    await sim.advance(301)
    token = await sim.component_token()
    assert await sim.errcode(AUTHORIZER_TOKEN_URL, body, token=token) == 61023
    body["authorizer_refresh_token"] = during["authorizer_refresh_token"]
    assert "authorizer_access_token" in await sim.wechat(AUTHORIZER_TOKEN_URL, body, token=token)


async def test_authorizer_token_for_an_account_never_authorized_is_61003(sim: Sim) -> None:
    token = await sim.component_token()
    body = {"component_appid": RETAIL.appid, "authorizer_appid": OA, "authorizer_refresh_token": "x"}
    assert await sim.errcode(AUTHORIZER_TOKEN_URL, body, token=token) == 61003


async def test_authorizer_info_for_official_account_and_mini_program(sim: Sim) -> None:
    refresh = await sim.seed(OA, {RETAIL.appid: [1, 24]}, user_name="gh_0a0000000001", verify_type=-1)
    await sim.seed(MP, {RETAIL.appid: [17, 25]}, kind="mini_program")
    token = await sim.component_token()

    oa = await sim.wechat(INFO_URL, {"component_appid": RETAIL.appid, "authorizer_appid": OA}, token=token)
    info = oa["authorizer_info"]
    assert info["nick_name"] == f"Account {OA}"
    assert info["principal_name"] == "ACME Retail Co., Ltd."
    assert info["user_name"] == "gh_0a0000000001"
    assert info["service_type_info"] == {"id": 2}
    assert info["verify_type_info"] == {"id": -1}
    assert info["account_status"] == 1
    assert {"head_img", "alias", "qrcode_url", "signature", "business_info"} <= set(info)
    assert "MiniProgramInfo" not in info
    assert oa["authorization_info"] == {
        "authorizer_appid": OA,
        "authorizer_refresh_token": refresh[RETAIL.appid],
        "func_info": [{"funcscope_category": {"id": 1}}, {"funcscope_category": {"id": 24}}],
    }

    mp = await sim.wechat(INFO_URL, {"component_appid": RETAIL.appid, "authorizer_appid": MP}, token=token)
    mini = mp["authorizer_info"]["MiniProgramInfo"]
    assert set(mini) == {"network", "categories", "visit_status"}
    assert "RequestDomain" in mini["network"]


async def test_authorizer_info_without_live_authorization_is_61003(sim: Sim) -> None:
    await sim.seed(OA, {FINANCE.appid: [1]})
    token = await sim.component_token()
    body = {"component_appid": RETAIL.appid, "authorizer_appid": OA}
    assert await sim.errcode(INFO_URL, body, token=token) == 61003


async def test_authorizer_list_pages_in_a_stable_order_and_caps_count(sim: Sim) -> None:
    appids = [f"wxa00000000000{n:02d}" for n in range(1, 8)]
    for appid in appids:
        await sim.seed(appid, {RETAIL.appid: [1]})
    await sim.seed("wxf0000000000001", {FINANCE.appid: [1]})
    await sim.control(
        "POST", "/authorizations/revoke", {"component_appid": RETAIL.appid, "authorizer_appid": appids[2]}
    )
    token = await sim.component_token()

    async def page(offset: int, count: int) -> dict[str, Any]:
        body = {"component_appid": RETAIL.appid, "offset": offset, "count": count}
        return await sim.wechat(LIST_URL, body, token=token)

    first, second = await page(0, 4), await page(4, 4)
    live = [a for a in appids if a != appids[2]]
    assert first["total_count"] == second["total_count"] == 6
    assert [item["authorizer_appid"] for item in first["list"] + second["list"]] == live
    assert set(first["list"][0]) == {"authorizer_appid", "refresh_token", "auth_time"}
    assert (await page(0, 500))["total_count"] == 6
    body = {"component_appid": RETAIL.appid, "offset": 0, "count": 501}
    assert await sim.errcode(LIST_URL, body, token=token) == 40170


async def test_exclusive_permission_sets_go_to_one_component_only(sim: Sim) -> None:
    await sim.seed(OA, {RETAIL.appid: [1, 24]})
    account = {"authorizer_appid": OA, "kind": "official_account", "nick_name": "A", "principal_name": "ACME"}
    refused = await sim.control(
        "POST", "/authorizers", account | {"components": {FINANCE.appid: [1, 24]}}, expect=409
    )
    assert "24" in refused["detail"]
    await sim.seed(OA, {FINANCE.appid: [1, 2]})  # non-exclusive sets are shared freely


async def test_reauthorization_after_revocation_is_a_new_authorization(sim: Sim) -> None:
    old = (await sim.seed(OA, {RETAIL.appid: [1]}))[RETAIL.appid]
    await sim.control(
        "POST", "/authorizations/revoke", {"component_appid": RETAIL.appid, "authorizer_appid": OA}
    )
    token = await sim.component_token()
    approved = await approve(sim, token, [1])
    assert approved["push"]["info_type"] == "authorized"
    body = {"component_appid": RETAIL.appid, "authorization_code": approved["auth_code"]}
    new = (await sim.wechat(QUERY_AUTH_URL, body, token=token))["authorization_info"][
        "authorizer_refresh_token"
    ]
    assert new != old
    refresh = {"component_appid": RETAIL.appid, "authorizer_appid": OA, "authorizer_refresh_token": old}
    assert await sim.errcode(AUTHORIZER_TOKEN_URL, refresh, token=token) == 61023

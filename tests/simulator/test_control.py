"""The control API: injected faults, counters, the clock, and the shape of unknown paths."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from tests.simulator.helpers import FINANCE, RETAIL, Sim

OA = "wxa0000000000001"
MP = "wxb0000000000002"
USERS = "/cgi-bin/user/get"


async def test_an_errcode_fault_for_a_number_of_times(sim: Sim) -> None:
    token = await sim.account(OA, [2])
    fault = await sim.control("POST", "/faults", {"endpoint": "user/get", "errcode": -1, "times": 2})
    assert fault["remaining"] == 2
    assert [await sim.errcode(USERS, token=token, method="GET") for _ in range(2)] == [-1, -1]
    assert "total" in await sim.wechat(USERS, token=token, method="GET")
    assert await sim.control("GET", "/faults") == []


async def test_a_fault_hits_only_its_endpoint_and_key(sim: Sim) -> None:
    retail = await sim.component_token()
    finance = await sim.component_token(FINANCE)
    await sim.control(
        "POST", "/faults", {"endpoint": "api_create_preauthcode", "errcode": 45009, "key": RETAIL.appid}
    )
    url = "/cgi-bin/component/api_create_preauthcode"
    assert await sim.errcode(url, {"component_appid": RETAIL.appid}, token=retail) == 45009
    assert "pre_auth_code" in await sim.wechat(url, {"component_appid": FINANCE.appid}, token=finance)
    assert await sim.component_token()  # other endpoints of the same key are not hit


async def test_a_refresh_fault_keyed_by_the_authorizer(sim: Sim) -> None:
    refresh = await sim.seed(OA, {RETAIL.appid: [1]})
    other = await sim.seed(MP, {RETAIL.appid: [1]}, kind="mini_program")
    await sim.control("POST", "/faults", {"endpoint": "api_authorizer_token", "errcode": 61023, "key": OA})
    token = await sim.component_token()
    url = "/cgi-bin/component/api_authorizer_token"
    body = {
        "component_appid": RETAIL.appid,
        "authorizer_appid": OA,
        "authorizer_refresh_token": refresh[RETAIL.appid],
    }
    assert await sim.errcode(url, body, token=token) == 61023
    body |= {"authorizer_appid": MP, "authorizer_refresh_token": other[RETAIL.appid]}
    assert "authorizer_access_token" in await sim.wechat(url, body, token=token)


async def test_http_status_and_malformed_faults(sim: Sim) -> None:
    token = await sim.account(OA, [2])
    await sim.control("POST", "/faults", {"endpoint": "*", "http_status": 503, "times": 1})
    unavailable = await sim.client.get(USERS, params={"access_token": token})
    assert unavailable.status_code == 503
    assert unavailable.headers["content-type"].startswith("text/html")

    await sim.control("POST", "/faults", {"endpoint": "user/get", "malformed": True, "times": 1})
    malformed = await sim.client.get(USERS, params={"access_token": token})
    assert malformed.status_code == 200
    with pytest.raises(msgspec.DecodeError):
        msgspec.json.decode(malformed.content)

    await sim.control(
        "POST", "/faults", {"endpoint": "user/get", "http_status": 502, "errcode": -1, "times": 1}
    )
    both = await sim.client.get(USERS, params={"access_token": token})
    assert (both.status_code, both.json()["errcode"]) == (502, -1)


async def test_a_delay_fault_slows_the_answer_then_answers_normally(sim: Sim) -> None:
    token = await sim.account(OA, [2])
    await sim.control("POST", "/faults", {"endpoint": "user/get", "delay_s": 0.2, "times": 1})
    started = time.monotonic()
    assert "total" in await sim.wechat(USERS, token=token, method="GET")
    assert time.monotonic() - started >= 0.2
    started = time.monotonic()
    await sim.wechat(USERS, token=token, method="GET")
    assert time.monotonic() - started < 0.2


@pytest.mark.parametrize(
    "spec",
    [
        {"endpoint": "/cgi-bin/user/get", "errcode": -1},
        {"endpoint": "user/get"},
        {"endpoint": "user/get", "errcode": 0},
        {"endpoint": "user/get", "errcode": -1, "times": 0},
        {"endpoint": "user/get", "http_status": 42},
    ],
)
async def test_unusable_faults_are_refused(sim: Sim, spec: dict[str, object]) -> None:
    await sim.control("POST", "/faults", spec, expect=400)


async def test_delete_clears_every_fault(sim: Sim) -> None:
    token = await sim.account(OA, [2])
    for endpoint in ("user/get", "menu/get"):
        await sim.control("POST", "/faults", {"endpoint": endpoint, "errcode": -1})
    assert (await sim.control("DELETE", "/faults"))["count"] == 2
    assert "total" in await sim.wechat(USERS, token=token, method="GET")


async def test_counters_by_endpoint_and_key_and_reset(sim: Sim) -> None:
    oa = await sim.account(OA, [2])
    mp = await sim.account(MP, [2], kind="mini_program")
    await sim.control("POST", "/counters/reset")
    for token in (oa, oa, mp):
        await sim.wechat(USERS, token=token, method="GET")
    await sim.component_token()
    await sim.errcode(USERS, method="GET")  # no token: counted under "-"
    counters = await sim.control("GET", "/counters")
    assert counters == {
        "api_component_token": {
            "total": 1,
            "by_key": {RETAIL.appid: 1},
            "ok": 1,
            "ok_by_key": {RETAIL.appid: 1},
        },
        # the call without a token was refused: counted, but not as a success
        "user/get": {"total": 4, "by_key": {"-": 1, OA: 2, MP: 1}, "ok": 3, "ok_by_key": {OA: 2, MP: 1}},
    }
    assert (await sim.control("POST", "/counters/reset"))["count"] == 5
    assert await sim.control("GET", "/counters") == {}


async def test_unknown_wechat_path_is_a_wechat_shaped_404(sim: Sim) -> None:
    response = await sim.client.post("/cgi-bin/no/such/api", json={})
    assert response.status_code == 404
    body = response.json()
    assert body["errcode"] == 40066
    assert " rid: " in body["errmsg"]
    control = await sim.client.get("/sim/no-such-thing")
    assert (control.status_code, control.json()["status_code"]) == (404, 404)


async def test_wrong_method_is_answered_like_wechat(sim: Sim) -> None:
    assert await sim.errcode("/cgi-bin/component/api_component_token", method="GET") == 43002
    assert await sim.errcode("/cgi-bin/user/get", {}, method="POST") == 43001


async def test_clock_advances_only_forward(sim: Sim) -> None:
    before = (await sim.control("GET", "/state"))["now"]
    after = (await sim.control("POST", "/clock/advance", {"seconds": 90}))["now"]
    assert after == pytest.approx(before + 90)
    await sim.control("POST", "/clock/advance", {"seconds": -1}, expect=400)


async def test_expire_authorizer_tokens_by_appid(sim: Sim) -> None:
    oa = await sim.account(OA, [2])
    mp = await sim.account(MP, [2], kind="mini_program")
    assert (await sim.control("POST", "/expire", {"what": "authorizer", "appid": OA}))["count"] == 1
    assert await sim.errcode(USERS, token=oa, method="GET") == 42001
    assert "total" in await sim.wechat(USERS, token=mp, method="GET")
    await sim.control("POST", "/expire", {"what": "all"})
    assert await sim.errcode(USERS, token=mp, method="GET") == 42001


async def test_unknown_component_and_bad_bodies_are_control_errors(sim: Sim) -> None:
    await sim.control("GET", "/components/wxc0mp000000404", expect=404)
    await sim.control("POST", "/components/wxc0mp000000404/push-ticket", expect=404)
    await sim.control("POST", "/authorizers", {"authorizer_appid": OA}, expect=400)
    bad_key = {"appid": "wxc0mp000000009", "secret": "s", "token": "t", "encoding_aes_key": "short"}
    await sim.control("POST", "/components", bad_key, expect=400)
    await sim.control(
        "POST",
        "/authorizations/revoke",
        {"component_appid": RETAIL.appid, "authorizer_appid": OA},
        expect=404,
    )


async def test_state_shows_components_accounts_authorizations_and_bindings(sim: Sim) -> None:
    await sim.ticket()
    refresh = await sim.seed(OA, {RETAIL.appid: [1, 24], FINANCE.appid: [2]})
    account = {"open_appid": "wx0pen0000000001", "principal_name": "ACME Retail Co., Ltd.", "verified": True}
    await sim.control("POST", "/open-accounts", account | {"members": [OA]})
    state = await sim.control("GET", "/state")
    assert [(c["appid"], c["ticket_count"]) for c in state["components"]] == [
        (RETAIL.appid, 1),
        (FINANCE.appid, 0),
    ]
    assert "secret" not in str(state["components"])
    (account,) = state["authorizers"]
    assert (account["authorizer_appid"], account["kind"], account["open_appid"]) == (
        OA,
        "official_account",
        "wx0pen0000000001",
    )
    assert [
        (a["component_appid"], a["func_ids"], a["status"], a["refresh_token"])
        for a in state["authorizations"]
    ] == [
        (RETAIL.appid, [1, 24], "authorized", refresh[RETAIL.appid]),
        (FINANCE.appid, [2], "authorized", refresh[FINANCE.appid]),
    ]


async def test_an_applied_fault_acts_on_the_call_then_loses_its_answer(sim: Sim) -> None:
    token = await sim.account(OA, [1, 24])
    group = {"open_appid": "wx0pen0000000001", "principal_name": "ACME Retail Co., Ltd.", "verified": True}
    await sim.control("POST", "/open-accounts", group)
    await sim.control("POST", "/counters/reset")
    fault = {"endpoint": "open/bind", "errcode": -1, "applied": True, "times": 1}
    await sim.control("POST", "/faults", fault)
    body = {"appid": OA, "open_appid": "wx0pen0000000001"}
    assert await sim.errcode("/cgi-bin/open/bind", body, token=token) == -1  # what the caller sees
    assert (await sim.wechat("/cgi-bin/open/get", {"appid": OA}, token=token))["open_appid"] == group[
        "open_appid"
    ]
    counted = (await sim.control("GET", "/counters"))["open/bind"]
    assert (counted["total"], counted["ok"]) == (1, 1)  # one call, and it succeeded at WeChat


async def test_an_applied_delay_acts_at_once_and_answers_late(sim: Sim) -> None:
    token = await sim.account(OA, [1, 24])
    await sim.control("POST", "/faults", {"endpoint": "open/create", "delay_s": 0.5, "applied": True})
    started = time.monotonic()
    call = asyncio.create_task(sim.wechat("/cgi-bin/open/create", {"appid": OA}, token=token))
    while not (await sim.control("GET", "/state"))["open_accounts"]:
        assert not call.done(), "the answer came before the world changed"  # created before it left
        await asyncio.sleep(0.02)
    created = await call
    assert time.monotonic() - started >= 0.5
    [account] = (await sim.control("GET", "/state"))["open_accounts"]
    assert created["open_appid"] == account["open_appid"] and account["members"] == [OA]


async def test_a_refusal_under_an_applied_fault_is_still_lost(sim: Sim) -> None:
    token = await sim.account(OA, [1, 24])
    await sim.control("POST", "/faults", {"endpoint": "open/bind", "http_status": 502, "applied": True})
    missing = {"appid": OA, "open_appid": "wx0pen0000000404"}  # WeChat refuses it (40013)
    answer = await sim.client.post("/cgi-bin/open/bind", params={"access_token": token}, json=missing)
    assert answer.status_code == 502
    counted = (await sim.control("GET", "/counters"))["open/bind"]
    assert (counted["total"], counted["ok"]) == (1, 0)

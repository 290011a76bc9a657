"""Pushes to the authorization event URL: encrypted and signed as WeChat does, logged with their outcome."""

from __future__ import annotations

import asyncio
import hashlib

import httpx

from gateway.simulator import SimComponent, SimulatorConfig, create_simulator_app
from gateway.xml import flatten, parse_xml
from tests.simulator.helpers import RETAIL, START, Inbox, Sim


async def test_ticket_push_is_signed_encrypted_and_decrypted_by_wechatpy(sim: Sim) -> None:
    ticket = await sim.ticket()

    (request,) = sim.inbox.requests
    assert request.method == "POST"
    assert str(request.url).startswith(RETAIL.event_url or "")
    params = request.url.params
    assert set(params) == {"signature", "timestamp", "nonce", "encrypt_type", "msg_signature"}
    assert params["encrypt_type"] == "aes"
    assert params["timestamp"] == str(int(START))
    plain = "".join(sorted([RETAIL.token, params["timestamp"], params["nonce"]]))
    assert params["signature"] == hashlib.sha1(plain.encode()).hexdigest()  # noqa: S324 - WeChat's signature
    envelope = flatten(parse_xml(request.content))
    assert set(envelope) == {"AppId", "Encrypt"}
    assert envelope["AppId"] == RETAIL.appid

    fields = sim.inbox.decrypt()
    assert fields == {
        "AppId": RETAIL.appid,
        "CreateTime": str(int(START)),
        "InfoType": "component_verify_ticket",
        "ComponentVerifyTicket": ticket,
    }


async def test_each_push_carries_a_new_ticket(sim: Sim) -> None:
    first, second = await sim.ticket(), await sim.ticket()
    assert first != second
    assert [sim.inbox.decrypt(i)["ComponentVerifyTicket"] for i in (0, 1)] == [first, second]
    shown = await sim.control("GET", f"/components/{RETAIL.appid}")
    assert shown["latest_ticket"] == second
    assert [t["valid"] for t in shown["tickets"]] == [True, True]


async def test_authorized_updateauthorized_and_unauthorized_pushes(sim: Sim) -> None:
    token = await sim.component_token()
    await sim.seed("wxa0000000000001", {})  # an account known to WeChat, not yet authorized to RETAIL

    async def approve(func_ids: list[int]) -> dict[str, object]:
        pre = await sim.wechat(
            "/cgi-bin/component/api_create_preauthcode", {"component_appid": RETAIL.appid}, token=token
        )
        body = {"authorizer_appid": "wxa0000000000001", "func_ids": func_ids}
        approved: dict[str, object] = await sim.control(
            "POST", f"/pre-auth-codes/{pre['pre_auth_code']}/approve", body
        )
        approved["pre_auth_code"] = pre["pre_auth_code"]
        return approved

    approved = await approve([1, 2])
    assert sim.inbox.decrypt() == {
        "AppId": RETAIL.appid,
        "CreateTime": str(int(START)),
        "InfoType": "authorized",
        "AuthorizerAppid": "wxa0000000000001",
        "AuthorizationCode": approved["auth_code"],
        "AuthorizationCodeExpiredTime": str(int(START) + 600),
        "PreAuthCode": approved["pre_auth_code"],
    }

    pushes_before = len(sim.inbox.requests)
    unchanged = await approve([2, 1])
    assert unchanged["push"] is None
    assert len(sim.inbox.requests) == pushes_before

    changed = await approve([1, 2, 15])
    fields = sim.inbox.decrypt()
    assert fields["InfoType"] == "updateauthorized"
    assert fields["AuthorizationCode"] == changed["auth_code"]

    await sim.control(
        "POST",
        "/authorizations/revoke",
        {"component_appid": RETAIL.appid, "authorizer_appid": "wxa0000000000001"},
    )
    assert sim.inbox.decrypt() == {
        "AppId": RETAIL.appid,
        "CreateTime": str(int(START)),
        "InfoType": "unauthorized",
        "AuthorizerAppid": "wxa0000000000001",
    }


async def test_push_outcomes_are_logged(sim: Sim) -> None:
    await sim.ticket()
    sim.inbox.reply = httpx.Response(200, text="ok")
    pushed = await sim.control("POST", f"/components/{RETAIL.appid}/push-ticket")
    assert (pushed["status"], pushed["body"], pushed["delivered"]) == (200, "ok", False)
    sim.inbox.reply = httpx.Response(503, text="success")
    await sim.ticket()
    sim.inbox.fail = httpx.ConnectError("connection refused")
    unreachable = await sim.control("POST", f"/components/{RETAIL.appid}/push-ticket")
    assert unreachable["status"] is None
    assert "ConnectError" in unreachable["error"]

    log = (await sim.control("GET", "/pushes"))["pushes"]
    assert [(p["status"], p["delivered"]) for p in log] == [
        (200, True),
        (200, False),
        (503, False),
        (None, False),
    ]
    assert {p["info_type"] for p in log} == {"component_verify_ticket"}
    assert [p["id"] for p in log] == [1, 2, 3, 4]


async def test_a_component_without_event_url_still_gets_a_ticket(sim: Sim) -> None:
    body = {
        "appid": "wxc0mp000000009",
        "secret": "s",
        "token": "t",
        "encoding_aes_key": RETAIL.encoding_aes_key,
    }
    await sim.control("POST", "/components", body)
    pushed = await sim.control("POST", "/components/wxc0mp000000009/push-ticket")
    assert pushed["ticket"].startswith("ticket@@@")
    assert pushed["status"] is None
    assert pushed["error"] == "the component has no event_url"
    assert sim.inbox.requests == []


async def test_tickets_are_pushed_at_start_then_on_schedule_until_shutdown() -> None:
    inbox = Inbox()
    silent = SimComponent("wxc0mp000000003", "s", "t", RETAIL.encoding_aes_key)  # no event_url: skipped
    config = SimulatorConfig(components=[RETAIL, silent], ticket_interval_s=0.05, push_on_start=True)
    app = create_simulator_app(config, push_transport=httpx.MockTransport(inbox.handle))
    async with app.lifespan():
        await asyncio.sleep(0.01)
        assert len(inbox.requests) == 1  # the push at start, before the first interval
        await asyncio.sleep(0.2)
    pushed = len(inbox.requests)
    assert pushed >= 3
    await asyncio.sleep(0.1)
    assert len(inbox.requests) == pushed  # the schedule stopped with the app
    tickets = {inbox.decrypt(i)["ComponentVerifyTicket"] for i in range(pushed)}
    assert len(tickets) == pushed


async def test_no_push_at_start_when_disabled() -> None:
    inbox = Inbox()
    config = SimulatorConfig(components=[RETAIL], ticket_interval_s=0, push_on_start=False)
    app = create_simulator_app(config, push_transport=httpx.MockTransport(inbox.handle))
    async with app.lifespan():
        await asyncio.sleep(0.02)
    assert inbox.requests == []


async def test_an_authorization_push_can_be_held_then_pushed_and_pushed_again(sim: Sim) -> None:
    token = await sim.component_token()
    await sim.seed("wxa0000000000001", {})
    pre = await sim.wechat(
        "/cgi-bin/component/api_create_preauthcode", {"component_appid": RETAIL.appid}, token=token
    )
    body = {"authorizer_appid": "wxa0000000000001", "func_ids": [1, 2], "push_now": False}
    approved = await sim.control("POST", f"/pre-auth-codes/{pre['pre_auth_code']}/approve", body)
    pushes_before = len(sim.inbox.requests)
    assert approved["push"] is None and len(sim.inbox.requests) == pushes_before

    for _ in range(2):  # the same push, as WeChat retries it
        record = await sim.control("POST", f"/auth-codes/{approved['auth_code']}/push")
        assert record["info_type"] == "authorized" and record["delivered"]
        fields = sim.inbox.decrypt()
        assert (fields["InfoType"], fields["AuthorizationCode"]) == ("authorized", approved["auth_code"])
    assert len(sim.inbox.requests) == pushes_before + 2
    await sim.control("POST", "/auth-codes/queryauthcode@@@nope/push", expect=404)

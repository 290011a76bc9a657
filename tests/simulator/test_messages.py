"""User messages relayed to a component's message-and-event URL, encrypted and signed as WeChat does."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
from wechatpy.crypto import WeChatCrypto

from gateway.events import flatten, parse_xml
from tests.simulator.helpers import FINANCE, RETAIL, START, Sim

OA = "wxa0000000000001"


def decrypt(request: httpx.Request) -> dict[str, str]:
    """The decrypted fields of a relayed message, as wechatpy reads them with RETAIL's crypto."""
    crypto = WeChatCrypto(RETAIL.token, RETAIL.encoding_aes_key, RETAIL.appid)
    params = request.url.params
    plain = crypto.decrypt_message(
        request.content.decode(), params["msg_signature"], params["timestamp"], params["nonce"]
    )
    return flatten(parse_xml(plain))


async def relay(sim: Sim, body: dict[str, Any], expect: int | None = None) -> Any:
    return await sim.control("POST", f"/components/{RETAIL.appid}/messages", body, expect=expect)


async def test_a_text_message_is_relayed_to_the_message_url_as_wechat_sends_it(sim: Sim) -> None:
    await sim.seed(OA, {RETAIL.appid: [1]}, user_name="gh_0a0000000001")
    relayed = await relay(sim, {"authorizer_appid": OA, "fields": {"MsgType": "text", "Content": "你好"}})

    (request,) = sim.inbox.requests
    assert str(request.url).split("?")[0] == f"http://gateway.test/wechat/retail/messages/{OA}"
    params = request.url.params
    assert set(params) == {"signature", "timestamp", "nonce", "encrypt_type", "msg_signature"}
    assert params["timestamp"] == str(int(START))
    plain = "".join(sorted([RETAIL.token, params["timestamp"], params["nonce"]]))
    assert params["signature"] == hashlib.sha1(plain.encode()).hexdigest()  # noqa: S324 - WeChat's signature
    envelope = flatten(parse_xml(request.content))
    assert set(envelope) == {"ToUserName", "Encrypt"}
    assert envelope["ToUserName"] == "gh_0a0000000001"

    fields = decrypt(request)
    follower = fields["FromUserName"]
    assert fields == {
        "ToUserName": "gh_0a0000000001",
        "FromUserName": follower,
        "CreateTime": str(int(START)),
        "MsgType": "text",
        "Content": "你好",
        "MsgId": fields["MsgId"],
    }
    assert fields["MsgId"].isdigit() and len(follower) == 28
    assert relayed == {
        "message": {k: int(v) if k in ("CreateTime", "MsgId") else v for k, v in fields.items()},
        "url": f"http://gateway.test/wechat/retail/messages/{OA}",
        "status": 200,
        "body": "success",
        "error": None,
    }


async def test_events_carry_no_msgid_and_a_follower_can_be_chosen(sim: Sim) -> None:
    token = await sim.account(OA, [1, 2])
    first = await relay(sim, {"authorizer_appid": OA, "fields": {"MsgType": "text", "Content": "a"}})
    others = await sim.wechat("/cgi-bin/user/get", token=token, method="GET")
    second = others["data"]["openid"][1]
    assert second != first["message"]["FromUserName"]
    event = {"MsgType": "event", "Event": "CLICK", "EventKey": "MENU_1"}
    await relay(sim, {"authorizer_appid": OA, "fields": event, "from_user": second})
    fields = decrypt(sim.inbox.requests[-1])
    assert fields == {
        "ToUserName": fields["ToUserName"],
        "FromUserName": second,
        "CreateTime": str(int(START)),
        "MsgType": "event",
        "Event": "CLICK",
        "EventKey": "MENU_1",
    }


async def test_release_test_accounts_are_seeded_with_their_original_ids(sim: Sim) -> None:
    await sim.seed("wx570bc396a51b8ff8", {RETAIL.appid: [1]}, principal="Tencent")
    await sim.seed("wxd101a85aa106f53e", {RETAIL.appid: [1]}, kind="mini_program", principal="Tencent")
    for appid, user_name in (
        ("wx570bc396a51b8ff8", "gh_3c884a361561"),
        ("wxd101a85aa106f53e", "gh_8dad206e9538"),
    ):
        text = {"MsgType": "text", "Content": "TESTCOMPONENT_MSG_TYPE_TEXT"}
        relayed = await relay(sim, {"authorizer_appid": appid, "fields": text})
        assert relayed["message"]["ToUserName"] == user_name
        assert flatten(parse_xml(sim.inbox.requests[-1].content))["ToUserName"] == user_name
        assert relayed["url"] == f"http://gateway.test/wechat/retail/messages/{appid}"


async def test_the_receivers_answer_comes_back_whole(sim: Sim) -> None:
    await sim.seed(OA, {RETAIL.appid: [1]})
    reply = "<xml><Encrypt><![CDATA[" + "A" * 2000 + "]]></Encrypt></xml>"
    sim.inbox.reply = httpx.Response(200, text=reply)
    relayed = await relay(sim, {"authorizer_appid": OA, "fields": {"MsgType": "text", "Content": "x"}})
    assert (relayed["status"], relayed["body"]) == (200, reply)

    sim.inbox.fail = httpx.ConnectError("refused")
    unreachable = await relay(sim, {"authorizer_appid": OA, "fields": {"MsgType": "text", "Content": "x"}})
    assert (unreachable["status"], unreachable["body"]) == (None, None)
    assert unreachable["error"] == "ConnectError: refused"


async def test_what_wechat_would_not_relay_is_refused(sim: Sim) -> None:
    text = {"MsgType": "text", "Content": "x"}
    await sim.seed(OA, {RETAIL.appid: [1]})
    await sim.seed("wxb0000000000002", {})  # known to WeChat, authorized to no component
    refusals = [
        (
            f"/components/{RETAIL.appid}/messages",
            {"authorizer_appid": "wxb0000000000002", "fields": text},
            409,
        ),
        ("/components/wxnosuchcomponent/messages", {"authorizer_appid": OA, "fields": text}, 404),
        (f"/components/{RETAIL.appid}/messages", {"authorizer_appid": OA, "fields": {"Content": "x"}}, 400),
        (
            f"/components/{RETAIL.appid}/messages",
            {"authorizer_appid": OA, "fields": text | {"FromUserName": "oSomeone"}},
            400,
        ),
        (
            f"/components/{RETAIL.appid}/messages",
            {"authorizer_appid": OA, "fields": text, "from_user": "o1"},
            400,
        ),
        (f"/components/{RETAIL.appid}/messages", {"authorizer_appid": OA, "fields": text, "extra": 1}, 400),
    ]
    for path, body, status in refusals:
        refused = await sim.control("POST", path, body, expect=status)
        assert refused["detail"], refused
    await sim.control(
        "POST", "/authorizations/revoke", {"component_appid": RETAIL.appid, "authorizer_appid": OA}
    )
    await relay(sim, {"authorizer_appid": OA, "fields": text}, expect=409)
    assert [r for r in sim.inbox.requests if "/messages/" in str(r.url)] == []  # nothing was relayed


async def test_a_component_without_message_url_is_reported(sim: Sim) -> None:
    await sim.seed(OA, {FINANCE.appid: [1]})
    relayed = await sim.control(
        "POST",
        f"/components/{FINANCE.appid}/messages",
        {"authorizer_appid": OA, "fields": {"MsgType": "text", "Content": "x"}},
    )
    assert relayed["url"] is None and relayed["status"] is None
    assert relayed["error"] == "the component has no message_url"
    assert sim.inbox.requests == []

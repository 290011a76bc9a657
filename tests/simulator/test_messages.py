"""User messages relayed to a component's message-and-event URL, encrypted and signed as WeChat does, and
sent again while no answer comes in time."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar, MediaType, Request, post
from litestar.params import FromPath
from litestar.testing import AsyncTestClient
from wechatpy.crypto import WeChatCrypto

from gateway.simulator import SimComponent, SimulatorConfig, create_simulator_app
from gateway.xml import flatten, parse_xml
from tests.simulator.helpers import FINANCE, RETAIL, START, Clock, Inbox, Sim
from tests.support.servers import serve_in_thread

OA = "wxa0000000000001"
TIMEOUT_S = 0.3  # WeChat's 5 s, shortened
SLOW_S = 1.0  # a receiver this slow never answers in time
TEXT = {"MsgType": "text", "Content": "x"}


def plaintext(request: httpx.Request) -> str:
    """The decrypted XML of a relayed message, as wechatpy reads it with RETAIL's crypto (which checks
    ``msg_signature``)."""
    crypto = WeChatCrypto(RETAIL.token, RETAIL.encoding_aes_key, RETAIL.appid)
    params = request.url.params
    plain: str = crypto.decrypt_message(
        request.content.decode(), params["msg_signature"], params["timestamp"], params["nonce"]
    )
    return plain


def decrypt(request: httpx.Request) -> dict[str, str]:
    """The decrypted fields of a relayed message (nested blocks left out)."""
    return flatten(parse_xml(plaintext(request)))


def url_signature_ok(params: httpx.QueryParams) -> bool:
    plain = "".join(sorted([RETAIL.token, params["timestamp"], params["nonce"]]))
    return params["signature"] == hashlib.sha1(plain.encode()).hexdigest()  # noqa: S324 - WeChat's signature


class SlowInbox(Inbox):
    """An inbox that answers its n-th request after ``delays[n]`` seconds, at once past the list."""

    def __init__(self, *delays: float) -> None:
        super().__init__()
        self.delays = list(delays)

    async def handle_slowly(self, request: httpx.Request) -> httpx.Response:
        answer = self.handle(request)  # recorded on arrival, whether or not the answer comes in time
        if self.delays:
            await asyncio.sleep(self.delays.pop(0))
        return answer


@asynccontextmanager
async def impatient_sim(
    transport: httpx.AsyncBaseTransport | None, inbox: Inbox, component: SimComponent = RETAIL
) -> AsyncIterator[Sim]:
    """The simulator waiting ``TIMEOUT_S`` for each answer, OA authorized on ``component``; pushes go
    through ``transport`` (None: real HTTP)."""
    clock = Clock()
    config = SimulatorConfig(
        components=[component], ticket_interval_s=0, push_on_start=False, message_timeout_s=TIMEOUT_S
    )
    app = create_simulator_app(config, clock=clock, push_transport=transport)
    async with AsyncTestClient(app, base_url="http://api.weixin.test", timeout=10) as client:
        sim = Sim(client, inbox, clock)
        await sim.seed(OA, {component.appid: [1]})
        yield sim


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
    (attempt,) = relayed.pop("attempts")
    assert attempt == {"status": 200, "body": "success", "error": None, "elapsed_ms": attempt["elapsed_ms"]}
    assert relayed == {
        "id": 1,
        "component_appid": RETAIL.appid,
        "authorizer_appid": OA,
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
    assert [a["error"] for a in unreachable["attempts"]] == ["ConnectError: refused"] * 3  # WeChat retries


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
    assert relayed["attempts"] == []
    assert sim.inbox.requests == []


async def test_a_receiver_that_never_answers_in_time_gets_the_same_message_three_times() -> None:
    inbox = SlowInbox(SLOW_S, SLOW_S, SLOW_S)
    async with impatient_sim(httpx.MockTransport(inbox.handle_slowly), inbox) as sim:
        relayed = await relay(sim, {"authorizer_appid": OA, "fields": TEXT})

    assert len(inbox.requests) == 3
    assert [a["status"] for a in relayed["attempts"]] == [None] * 3
    assert [a["error"] for a in relayed["attempts"]] == [f"no answer in {TIMEOUT_S:g} s"] * 3
    assert all(TIMEOUT_S * 1000 <= a["elapsed_ms"] < SLOW_S * 1000 for a in relayed["attempts"])
    assert (relayed["status"], relayed["body"], relayed["error"]) == (None, None, "no answer in 0.3 s")
    # the same message (MsgId, CreateTime and all), each attempt signed anew; wechatpy checks every one
    sent = [decrypt(request) for request in inbox.requests]
    assert sent == [sent[0]] * 3
    assert sent[0]["MsgId"] == str(relayed["message"]["MsgId"])
    params = [request.url.params for request in inbox.requests]
    assert all(url_signature_ok(p) for p in params)
    assert len({p["nonce"] for p in params}) == len({p["msg_signature"] for p in params}) == 3


async def test_an_answer_ends_the_retries_whatever_its_status() -> None:
    inbox = SlowInbox(SLOW_S)  # too slow once, then at once
    async with impatient_sim(httpx.MockTransport(inbox.handle_slowly), inbox) as sim:
        relayed = await relay(sim, {"authorizer_appid": OA, "fields": TEXT})
        assert [a["status"] for a in relayed["attempts"]] == [None, 200]
        assert (relayed["status"], relayed["body"], relayed["error"]) == (200, "success", None)

        inbox.reply = httpx.Response(500, text="busy")
        failed = await relay(sim, {"authorizer_appid": OA, "fields": TEXT})
        assert [(a["status"], a["body"]) for a in failed["attempts"]] == [(500, "busy")]
    assert len(inbox.requests) == 3


async def test_a_fast_receiver_gets_the_message_once_and_every_relay_is_logged(sim: Sim) -> None:
    await sim.seed(OA, {RETAIL.appid: [1]})
    first = await relay(sim, {"authorizer_appid": OA, "fields": TEXT})
    sim.inbox.fail = httpx.ConnectError("refused")
    second = await relay(sim, {"authorizer_appid": OA, "fields": {"MsgType": "event", "Event": "subscribe"}})

    assert len(sim.inbox.requests) == 1 + 3
    assert len(first["attempts"]) == 1
    logged = (await sim.control("GET", "/relays"))["relays"]
    assert logged == [first, second]
    assert [r["id"] for r in logged] == [1, 2]


async def test_a_message_over_real_http_is_sent_again_after_the_timeout() -> None:
    """Over a socket the wait cuts a live connection: the receiver is still busy when the retry comes."""
    delays = [SLOW_S, SLOW_S]
    seen: list[dict[str, str]] = []

    @post("/wechat/retail/messages/{appid:str}", status_code=200, media_type=MediaType.TEXT)
    async def receive(appid: FromPath[str], request: Request[Any, Any, Any]) -> str:
        seen.append(dict(request.query_params) | {"appid": appid})
        if delays:
            await asyncio.sleep(delays.pop(0))
        return "success"

    with serve_in_thread(Litestar([receive], logging_config=None)) as base_url:
        component = msgspec.structs.replace(RETAIL, message_url=f"{base_url}/wechat/retail/messages/$APPID$")
        async with impatient_sim(None, Inbox(), component) as sim:
            relayed = await relay(sim, {"authorizer_appid": OA, "fields": TEXT})

    assert [a["status"] for a in relayed["attempts"]] == [None, None, 200]
    assert relayed["attempts"][0]["error"] == "no answer in 0.3 s"
    assert (relayed["status"], relayed["body"]) == (200, "success")
    assert [s["appid"] for s in seen] == [OA] * 3
    assert len({s["msg_signature"] for s in seen}) == 3


async def test_an_event_can_carry_a_nested_block(sim: Sim) -> None:
    await sim.seed(OA, {RETAIL.appid: [1]})
    scan = {"ScanType": "qrcode", "ScanResult": "https://example.com/1"}
    event = {"MsgType": "event", "Event": "scancode_push", "EventKey": "SCAN", "ScanCodeInfo": scan}
    relayed = await relay(sim, {"authorizer_appid": OA, "fields": event})

    assert relayed["message"]["ScanCodeInfo"] == scan
    root = parse_xml(plaintext(sim.inbox.requests[-1]))
    nested = root.find("ScanCodeInfo")
    assert nested is not None and flatten(nested) == scan
    assert flatten(root)["Event"] == "scancode_push"


@pytest.mark.parametrize(
    "fields",
    [
        TEXT | {"Bad Tag": "x"},
        TEXT | {"ScanCodeInfo": {"<x>": "y"}},
        TEXT | {"Twice": {"Nested": {"Deep": "x"}}},
    ],
)
async def test_fields_that_are_not_wechat_xml_are_refused(sim: Sim, fields: dict[str, Any]) -> None:
    await sim.seed(OA, {RETAIL.appid: [1]})
    refused = await relay(sim, {"authorizer_appid": OA, "fields": fields}, expect=400)
    assert refused["detail"]
    assert sim.inbox.requests == []


def test_the_relay_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="message_attempts"):
        SimulatorConfig(message_attempts=0)
    with pytest.raises(ValueError, match="message_timeout_s"):
        SimulatorConfig(message_timeout_s=0)

"""The message-and-event URL, with user messages relayed by the simulator exactly as WeChat relays them,
and WeChat's release test (全网发布接入检测) answered by the gateway itself.

Passive replies are decrypted with wechatpy, an implementation independent of the gateway's.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient
from wechatpy.crypto import WeChatCrypto

from gateway.crypto import MessageCrypto, SecretBox
from gateway.errors import XmlRejected
from gateway.http.app import create_app
from gateway.registry.model import Registry
from gateway.xml import build_xml, flatten, parse_user_message, parse_xml
from tests.conftest import PLATFORM_SECRETS, make_settings, wechat_crypto
from tests.support.flows import approve_authorization
from tests.support.world import OA, RETAIL, World

TEST_OA = "wx570bc396a51b8ff8"  # WeChat's release-test official account, gh_3c884a361561
TEST_MP = "wxd101a85aa106f53e"  # WeChat's release-test mini program, gh_8dad206e9538
TEST_ACCOUNTS = {
    TEST_OA: ("official_account", "gh_3c884a361561"),
    TEST_MP: ("mini_program", "gh_8dad206e9538"),
}


async def relay(
    world: World, appid: str, fields: dict[str, Any], *, platform: str = "retail"
) -> dict[str, Any]:
    """A follower of ``appid`` writes to it; the simulator relays the message and reports the answer."""
    component = PLATFORM_SECRETS[platform]["appid"]
    response = await world.sim.post(
        f"/sim/components/{component}/messages", json={"authorizer_appid": appid, "fields": fields}
    )
    assert response.status_code == 200, response.text
    relayed: dict[str, Any] = response.json()
    assert relayed["error"] is None, relayed
    return relayed


def passive_reply(body: str, platform: str = "retail") -> dict[str, str]:
    """The decrypted fields of a passive reply, read by wechatpy with the reply's own signature."""
    values = PLATFORM_SECRETS[platform]
    outer = flatten(parse_xml(body))
    assert set(outer) == {"Encrypt", "MsgSignature", "TimeStamp", "Nonce"}
    crypto = WeChatCrypto(values["token"], values["aes_key"], values["appid"])
    plain = crypto.decrypt_message(body, outer["MsgSignature"], outer["TimeStamp"], outer["Nonce"])
    return flatten(parse_xml(plain))


async def custom_messages(world: World, count: int) -> list[dict[str, Any]]:
    """The customer-service messages WeChat received, once there are ``count`` of them."""
    for _ in range(100):
        messages: list[dict[str, Any]] = (await world.sim.get("/sim/messages")).json()["messages"]
        if len(messages) >= count:
            return messages
        await asyncio.sleep(0.02)
    raise AssertionError(f"expected {count} customer-service messages, got {messages}")


async def seed_test_account(world: World, appid: str) -> None:
    """WeChat's test account, authorized to retail with message management (set 1)."""
    kind, _ = TEST_ACCOUNTS[appid]
    body = {
        "authorizer_appid": appid,
        "kind": kind,
        "nick_name": "WeChat release test",
        "principal_name": "Tencent",
        "components": {RETAIL["appid"]: [1]},
    }
    assert (await world.sim.post("/sim/authorizers", json=body)).status_code == 201


# --- ordinary messages ------------------------------------------------------------------------------


async def test_a_user_message_is_answered_success(ready: World) -> None:
    relayed = await relay(ready, OA, {"MsgType": "text", "Content": "hello"})
    assert (relayed["status"], relayed["body"]) == (200, "success")
    assert relayed["url"] == f"http://gateway.test/wechat/retail/messages/{OA}"
    event = await relay(ready, OA, {"MsgType": "event", "Event": "subscribe"})
    assert (event["status"], event["body"]) == (200, "success")
    assert await ready.counters() == {}  # nothing asked of WeChat


async def test_the_release_test_probes_mean_nothing_from_other_accounts(ready: World) -> None:
    for fields in (
        {"MsgType": "text", "Content": "TESTCOMPONENT_MSG_TYPE_TEXT"},
        {"MsgType": "text", "Content": "QUERY_AUTH_CODE:queryauthcode@@@abc"},
        {"MsgType": "event", "Event": "LOCATION", "Latitude": "23.1", "Longitude": "113.3"},
    ):
        relayed = await relay(ready, OA, fields)
        assert (relayed["status"], relayed["body"]) == (200, "success")
    assert await ready.counters() == {}


# --- the release test -------------------------------------------------------------------------------


@pytest.mark.parametrize("appid", TEST_ACCOUNTS)
async def test_release_test_text_is_answered_with_a_passive_reply(ready: World, appid: str) -> None:
    await seed_test_account(ready, appid)
    relayed = await relay(ready, appid, {"MsgType": "text", "Content": "TESTCOMPONENT_MSG_TYPE_TEXT"})
    assert relayed["status"] == 200
    sent = relayed["message"]
    reply = passive_reply(relayed["body"])
    assert reply == {
        "ToUserName": sent["FromUserName"],
        "FromUserName": TEST_ACCOUNTS[appid][1],
        "CreateTime": reply["CreateTime"],
        "MsgType": "text",
        "Content": "TESTCOMPONENT_MSG_TYPE_TEXT_callback",
    }
    assert int(reply["CreateTime"]) > 0
    assert await ready.counters() == {}


@pytest.mark.parametrize(
    ("appid", "event"),
    [
        (TEST_OA, {"Event": "LOCATION", "Latitude": "23.137466", "Longitude": "113.352425"}),
        (TEST_MP, {"Event": "user_enter_tempsession", "SessionFrom": "release-test"}),
    ],
)
async def test_release_test_event_is_answered_with_its_name(
    ready: World, appid: str, event: dict[str, str]
) -> None:
    await seed_test_account(ready, appid)
    relayed = await relay(ready, appid, {"MsgType": "event"} | event)
    reply = passive_reply(relayed["body"])
    assert reply["Content"] == f"{event['Event']}from_callback"
    assert (reply["ToUserName"], reply["FromUserName"]) == (
        relayed["message"]["FromUserName"],
        TEST_ACCOUNTS[appid][1],
    )
    assert reply["MsgType"] == "text"


@pytest.mark.parametrize("appid", TEST_ACCOUNTS)
@pytest.mark.parametrize("order", ["message first", "event first"])
async def test_release_test_query_auth_code_is_exchanged_once_and_answered_through_the_api(
    ready: World, appid: str, order: str
) -> None:
    # WeChat authorizes the component from the test account: the code comes with the authorized event.
    kind, _ = TEST_ACCOUNTS[appid]
    approval = await approve_authorization(
        ready.sim, RETAIL["appid"], RETAIL["secret"], appid, [1], kind=kind, principal_name="Tencent"
    )
    assert approval["push"]["delivered"]
    code = approval["auth_code"]
    if order == "event first":
        await ready.services.authorizations.process_pending()

    relayed = await relay(ready, appid, {"MsgType": "text", "Content": f"QUERY_AUTH_CODE:{code}"})
    assert (relayed["status"], relayed["body"]) == (200, "")  # "return an empty string within 5 s"

    (sent,) = await custom_messages(ready, 1)
    assert sent["component_appid"] == RETAIL["appid"]
    assert sent["authorizer_appid"] == appid
    assert sent["message"] == {
        "touser": relayed["message"]["FromUserName"],
        "msgtype": "text",
        "text": {"content": f"{code}_from_api"},
    }
    await ready.services.authorizations.process_pending()  # the event, when it is second, finds it done
    assert await ready.calls("api_query_auth") == 1
    stored = await ready.services.store.authorizations.get("retail", appid)
    assert stored is not None and stored.func_ids == {1} and stored.status == "active"


async def test_release_test_with_a_refused_code_answers_empty_and_sends_nothing(ready: World) -> None:
    await seed_test_account(ready, TEST_OA)
    relayed = await relay(
        ready, TEST_OA, {"MsgType": "text", "Content": "QUERY_AUTH_CODE:queryauthcode@@@unknown"}
    )
    assert (relayed["status"], relayed["body"]) == (200, "")
    assert (await ready.sim.get("/sim/messages")).json()["messages"] == []
    assert await ready.services.store.authorizations.get("retail", TEST_OA) is None


# --- refusals -------------------------------------------------------------------------------------


def signed(
    plaintext: bytes,
    *,
    crypto: MessageCrypto | None = None,
    to_user_name: str = "gh_3c884a361561",
    timestamp: str | None = None,
    nonce: str = "42",
) -> tuple[dict[str, str], bytes]:
    """A push as WeChat relays a user message: ToUserName envelope, signature over Encrypt; the timestamp
    is now unless given (the gateway refuses one outside its window)."""
    crypto = crypto or wechat_crypto("retail")
    timestamp = timestamp or str(int(time.time()))
    encrypt = crypto.encrypt(plaintext)
    query = {
        "timestamp": timestamp,
        "nonce": nonce,
        "encrypt_type": "aes",
        "msg_signature": crypto.sign(timestamp, nonce, encrypt),
    }
    return query, build_xml({"ToUserName": to_user_name, "Encrypt": encrypt}).encode()


def user_xml(content: str, from_user: str = "oUser0000000000000000000001") -> bytes:
    fields = {
        "ToUserName": "gh_3c884a361561",
        "FromUserName": from_user,
        "CreateTime": 1700000000,
        "MsgType": "text",
        "Content": content,
        "MsgId": 1234567890123456,
    }
    return build_xml(fields).encode()


def hostile_cases(content: str, follower: str) -> dict[str, tuple[str, dict[str, str], bytes, int, str]]:
    """Pushes of the release test's ``content`` from ``follower`` that must be refused, nothing done."""
    url = f"/wechat/retail/messages/{TEST_OA}"
    message = user_xml(content, follower)
    query, body = signed(message)
    retail = PLATFORM_SECRETS["retail"]
    someone_else = MessageCrypto(retail["token"], retail["aes_key"], "wxsomeoneelse001")
    other_token = MessageCrypto("not-the-token", retail["aes_key"], retail["appid"])
    cases = {
        "bad signature": (url, query | {"msg_signature": "0" * 40}, body, 403, "signature_invalid"),
        "signed with another token": (
            url,
            *signed(message, crypto=other_token),
            403,
            "signature_invalid",
        ),
        "trailing appid of another account": (
            url,
            *signed(message, crypto=someone_else),
            400,
            "appid_mismatch",
        ),
        "finance's push at retail's url": (
            url,
            *signed(message, crypto=wechat_crypto("finance")),
            403,
            "signature_invalid",
        ),
        "envelope xxe": (
            url,
            query,
            b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><Encrypt>&e;</Encrypt></xml>',
            400,
            "invalid_xml",
        ),
        "decrypted xxe": (
            url,
            *signed(
                b'<!DOCTYPE xml [<!ENTITY t SYSTEM "file:///etc/passwd">]><xml><Content>&t;</Content></xml>'
            ),
            400,
            "invalid_message",
        ),
        "decrypted without MsgType": (
            url,
            *signed(message.replace(b"<MsgType><![CDATA[text]]></MsgType>", b"")),
            400,
            "invalid_message",
        ),
        "envelope names another account": (
            url,
            *signed(message, to_user_name="gh_someoneelse0"),
            400,
            "invalid_message",
        ),
        "oversized": (
            url,
            query,
            b"<xml><Encrypt>" + b"A" * 70_000 + b"</Encrypt></xml>",
            413,
            "body_too_large",
        ),
        "missing msg_signature": (
            url,
            {k: v for k, v in query.items() if k != "msg_signature"},
            body,
            400,
            "missing_parameter",
        ),
        "unknown platform": (f"/wechat/nowhere/messages/{TEST_OA}", query, body, 404, "platform_unknown"),
        "url appid not an appid": (
            "/wechat/retail/messages/gh_3c884a361561",
            query,
            body,
            400,
            "invalid_parameter",
        ),
    }
    return cases


async def test_hostile_pushes_get_a_precise_4xx_and_nothing_is_done(ready: World) -> None:
    approval = await approve_authorization(
        ready.sim, RETAIL["appid"], RETAIL["secret"], TEST_OA, [1], principal_name="Tencent"
    )
    content = f"QUERY_AUTH_CODE:{approval['auth_code']}"
    hello = await relay(ready, TEST_OA, {"MsgType": "text", "Content": "hello"})
    follower = hello["message"]["FromUserName"]
    for name, (path, query, body, status, code) in hostile_cases(content, follower).items():
        response = await ready.gateway.post(path, params=query, content=body)
        assert response.status_code == status, (name, response.text)
        assert response.json()["error"]["code"] == code, name
        assert response.json()["error"]["message"], name
    await asyncio.sleep(0.05)
    assert await ready.calls("api_query_auth") == 0
    assert (await ready.sim.get("/sim/messages")).json()["messages"] == []

    # The same message, correctly signed, is acted upon: the refusals were the checks at work.
    query, body = signed(user_xml(content, follower))
    response = await ready.gateway.post(f"/wechat/retail/messages/{TEST_OA}", params=query, content=body)
    assert (response.status_code, response.text) == (200, "")
    (sent,) = await custom_messages(ready, 1)
    assert sent["message"]["text"]["content"] == f"{approval['auth_code']}_from_api"


def test_mutated_pushes_never_fail_the_gateway(
    registry: Registry, sqlite_url: str, secret_box: SecretBox
) -> None:
    """Random damage to a valid push, or to the appid of its URL: always a 2xx or a 4xx naming the fault."""
    fields = st.sampled_from(["msg_signature", "timestamp", "nonce", "body", "appid"])
    damage = st.one_of(
        st.tuples(st.just("replace"), st.text(max_size=80)),
        st.tuples(st.just("flip"), st.integers(min_value=0, max_value=10_000)),
        st.tuples(st.just("bytes"), st.binary(max_size=300)),
    )

    with TestClient(app=create_app(make_settings(sqlite_url, secret_box), registry)) as client:

        @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(field=fields, how=damage)
        def check(field: str, how: tuple[str, object]) -> None:
            query, body = signed(user_xml("hello"))
            parts = {**query, "body": body.decode(), "appid": OA}
            original = parts[field].encode()
            kind, arg = how
            if kind == "replace":
                damaged = str(arg).encode()
            elif kind == "bytes":
                damaged = bytes(arg)  # type: ignore[call-overload]
            else:
                i = int(arg) % len(original)  # type: ignore[call-overload]
                damaged = original[:i] + bytes([original[i] ^ 0x01]) + original[i + 1 :]
            if field == "body":
                body = damaged
            else:
                parts[field] = damaged.decode("utf-8", "replace")
            query = {k: parts[k] for k in query}
            path = f"/wechat/retail/messages/{quote(parts['appid'], safe='')}"
            response = client.post(path, params=query, content=body)
            assert response.status_code < 500, response.text
            if response.status_code not in (200, 404, 405):
                assert response.json()["error"]["code"]

        check()


# --- the pure parts -----------------------------------------------------------------------------------


def test_encrypt_reply_is_read_by_wechatpy() -> None:
    crypto = wechat_crypto("finance")
    reply = crypto.encrypt_reply(b"<xml><Content><![CDATA[hi]]></Content></xml>", 1700000123, "nonce42")
    outer = flatten(parse_xml(reply))
    assert (outer["TimeStamp"], outer["Nonce"]) == ("1700000123", "nonce42")
    values = PLATFORM_SECRETS["finance"]
    plain = WeChatCrypto(values["token"], values["aes_key"], values["appid"]).decrypt_message(
        reply, outer["MsgSignature"], outer["TimeStamp"], outer["Nonce"]
    )
    assert flatten(parse_xml(plain)) == {"Content": "hi"}


def test_user_messages_are_parsed_and_checked() -> None:
    message = parse_user_message(user_xml("hello"))
    assert (message.to_user_name, message.from_user_name, message.create_time) == (
        "gh_3c884a361561",
        "oUser0000000000000000000001",
        1700000000,
    )
    assert (message.msg_type, message.content, message.event) == ("text", "hello", "")
    assert message.fields["MsgId"] == "1234567890123456"
    event = build_xml({"ToUserName": "gh_a", "FromUserName": "o1", "CreateTime": 1, "MsgType": "event"})
    for refused in (
        event.encode(),  # an event without its Event
        user_xml("x").replace(b"oUser0000000000000000000001", b"o user"),
        user_xml("x").replace(b"<CreateTime>1700000000</CreateTime>", b"<CreateTime>soon</CreateTime>"),
        user_xml("x").replace(b"<![CDATA[text]]>", b"<![CDATA[te xt]]>"),
    ):
        with pytest.raises(XmlRejected):
            parse_user_message(refused)

"""Forwarding user messages and events to subscribers (SPEC §10), in-process against the simulator, with
real subscriber servers on loopback sockets: matching, the signed body, WeChat's retries, unknown
authorizers, passive replies of every kind, retries with backoff, dead letters and replays, and a slow
subscriber beside a fast one.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from typing import Any

import msgspec
import pytest
import yaml
from sqlalchemy import text

from gateway.crypto import SecretBox
from gateway.delivery.worker import DeliveryPolicy
from gateway.registry.model import parse_registry
from gateway.simulator import SimComponent
from gateway.simulator.pushes import message_envelope
from gateway.simulator.state import UserMessage as SimUserMessage
from tests.conftest import CLIENT_KEYS, REGISTRY_YAML, registry_environ
from tests.support.flows import push_ticket
from tests.support.subscriber import Subscriber, served_subscriber
from tests.support.world import OA, OA2, RETAIL, World, open_world

CRM_SECRET = "crm-webhook-secret-0123"
OPS_SECRET = "ops-webhook-secret-4567"
ADMIN = {"Authorization": f"Bearer {CLIENT_KEYS['ops']}"}
FAST = DeliveryPolicy(
    attempt_timeout_s=1.0, reply_wait_s=0.8, first_retry_s=0.05, max_retry_s=0.2, max_age_s=60, poll_s=0.05
)


@pytest.fixture
def subscribers() -> Iterator[dict[str, tuple[Subscriber, str]]]:
    """Two subscriber servers: ``crm`` and ``ops``, each with its own secret."""
    with ExitStack() as stack:
        yield {
            "crm": stack.enter_context(served_subscriber(CRM_SECRET)),
            "ops": stack.enter_context(served_subscriber(OPS_SECRET)),
        }


@asynccontextmanager
async def forwarding(
    database_url: str,
    secret_box: SecretBox,
    subscriptions: list[dict[str, Any]],
    policy: DeliveryPolicy = FAST,
) -> AsyncIterator[World]:
    """The gateway with ``subscriptions`` (secrets given by value), OA authorized on retail, the delivery
    worker running."""
    document = REGISTRY_YAML + yaml.safe_dump({"subscriptions": subscriptions})
    registry = parse_registry(document, source="forwarding.yaml", environ=registry_environ())
    async with open_world(registry, database_url, secret_box, delivery_policy=policy) as world:
        assert (await push_ticket(world.sim, RETAIL["appid"]))["body"] == "success"
        await world.authorize("retail", OA, [1, 2])
        stop = asyncio.Event()
        worker = asyncio.create_task(world.services.deliveries.run_worker(stop))
        try:
            yield world
        finally:
            stop.set()
            await worker


def subscription(name: str, subscribers: dict[str, tuple[Subscriber, str]], **options: Any) -> dict[str, Any]:
    secret = CRM_SECRET if name == "crm" else OPS_SECRET
    return {"client": name, "url": subscribers[name][1] + "/inbox", "secret": secret} | options


async def relay(world: World, fields: dict[str, Any], appid: str = OA, **extra: Any) -> dict[str, Any]:
    """A follower writes to ``appid`` (or triggers an event); WeChat relays it to retail's message URL."""
    response = await world.sim.post(
        f"/sim/components/{RETAIL['appid']}/messages",
        json={"authorizer_appid": appid, "fields": fields} | extra,
    )
    assert response.status_code == 200, response.text
    relayed: dict[str, Any] = response.json()
    assert relayed["status"] == 200, relayed
    return relayed


async def wait_status(
    world: World, status: str, count: int = 1, timeout_s: float = 10.0
) -> list[dict[str, Any]]:
    """The deliveries in ``status`` once there are ``count`` of them."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        page = (await world.gateway.get("/v1/deliveries", params={"status": status}, headers=ADMIN)).json()
        if len(page["items"]) >= count:
            return list(page["items"])
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"expected {count} {status} deliveries, have {page['items']}")
        await asyncio.sleep(0.05)


async def test_a_text_message_is_delivered_signed_with_every_field(
    database_url: str, secret_box: SecretBox, subscribers: dict[str, tuple[Subscriber, str]]
) -> None:
    crm, _ = subscribers["crm"]
    async with forwarding(database_url, secret_box, [subscription("crm", subscribers)]) as world:
        relayed = await relay(world, {"MsgType": "text", "Content": "  hello, gateway  "})

        assert relayed["body"] == "success"
        (delivery,) = await crm.wait_for(1)
        assert delivery.signature_ok and delivery.path == "/inbox"
        body = delivery.payload
        assert set(body) == {"id", "platform", "authorizer_appid", "received_at", "message"}
        assert body["id"] == delivery.delivery_id
        assert (body["platform"], body["authorizer_appid"]) == ("retail", OA)
        assert isinstance(body["received_at"], int)
        sent = relayed["message"]
        assert body["message"] == {key: str(value) for key, value in sent.items()}
        assert body["message"]["Content"] == "  hello, gateway  "  # as the user wrote it
        (record,) = await wait_status(world, "delivered")
        assert record["id"] == body["id"] and record["attempts"] == 1 and record["client"] == "crm"

        # Stored sealed: the raw table holds neither what the user wrote nor their openid.
        async with world.services.store.engine.connect() as conn:
            rows = (await conn.execute(text("SELECT * FROM inbound_messages"))).all()
        assert len(rows) == 1
        assert "hello, gateway" not in repr(rows) and sent["FromUserName"] not in repr(rows)


async def test_subscriptions_match_by_authorizer_and_type(
    database_url: str, secret_box: SecretBox, subscribers: dict[str, tuple[Subscriber, str]]
) -> None:
    crm, _ = subscribers["crm"]
    ops, _ = subscribers["ops"]
    subscriptions = [
        subscription("crm", subscribers, types=["text", "event.CLICK"]),
        subscription("ops", subscribers, authorizers=[OA2], types=["*"]),
    ]
    async with forwarding(database_url, secret_box, subscriptions) as world:
        await world.authorize("retail", OA2, [1])
        await relay(world, {"MsgType": "image", "PicUrl": "http://p/1.jpg", "MediaId": "m1"})
        await relay(world, {"MsgType": "event", "Event": "VIEW", "EventKey": "http://x"})
        await relay(world, {"MsgType": "event", "Event": "click", "EventKey": "MENU_1"})
        await relay(world, {"MsgType": "text", "Content": "to OA2"}, appid=OA2)
        await relay(world, {"MsgType": "text", "Content": "to OA"})

        await wait_status(world, "delivered", 3)
        await asyncio.sleep(0.3)  # anything wrongly due would have gone by now
        crm_got = [(d.payload["authorizer_appid"], d.payload["message"]["MsgType"]) for d in crm.received]
        assert sorted(crm_got) == [(OA, "event"), (OA, "text"), (OA2, "text")]
        assert [d.payload["message"]["Content"] for d in ops.received] == ["to OA2"]


async def push_as_wechat(
    world: World, create_time: int, fields: dict[str, str | int], appid: str = OA
) -> str:
    """Push one message to retail's message URL as WeChat would (a fresh timestamp and nonce, so each
    push of the same message is signed anew, as WeChat's retries are); returns the answer."""
    component = SimComponent(RETAIL["appid"], RETAIL["secret"], RETAIL["token"], RETAIL["aes_key"])
    message = SimUserMessage(RETAIL["appid"], appid, "gh_0a0000000001", "o_follower_1", create_time, fields)
    timestamp = str(int(time.time()))  # the push's, not the message's CreateTime: within the gateway's window
    params, xml = message_envelope(component, message, timestamp, secrets.token_hex(5))
    response = await world.gateway.post(
        f"/wechat/retail/messages/{appid}", params=params, content=xml.encode()
    )
    assert response.status_code == 200, response.text
    return response.text


async def test_wechat_retries_are_delivered_once(
    database_url: str, secret_box: SecretBox, subscribers: dict[str, tuple[Subscriber, str]]
) -> None:
    crm, _ = subscribers["crm"]
    async with forwarding(database_url, secret_box, [subscription("crm", subscribers)]) as world:
        text_message: dict[str, str | int] = {"MsgType": "text", "Content": "once", "MsgId": 7001}
        event: dict[str, str | int] = {"MsgType": "event", "Event": "subscribe", "EventKey": ""}
        for _ in range(3):  # the same MsgId; for the event the same sender, time, event and key
            assert await push_as_wechat(world, 1_700_000_000, text_message) == "success"
            assert await push_as_wechat(world, 1_700_000_000, event) == "success"
        await push_as_wechat(world, 1_700_000_001, event)  # the same event a second later: another one
        await push_as_wechat(world, 1_700_000_000, event | {"EventKey": "qrscene_1"})

        await wait_status(world, "delivered", 4)
        await asyncio.sleep(0.3)
        assert len(crm.received) == 4
        async with world.services.store.engine.connect() as conn:
            count = (await conn.execute(text("SELECT count(*) FROM inbound_messages"))).scalar_one()
        assert count == 4


async def test_an_unknown_authorizer_is_answered_and_recorded_not_delivered(
    database_url: str, secret_box: SecretBox, subscribers: dict[str, tuple[Subscriber, str]]
) -> None:
    crm, _ = subscribers["crm"]
    async with forwarding(database_url, secret_box, [subscription("crm", subscribers)]) as world:
        answer = await push_as_wechat(
            world, 1_700_000_000, {"MsgType": "text", "Content": "who?", "MsgId": 1}, "wxe0000000000099"
        )

        assert answer == "success"
        async with world.services.store.engine.connect() as conn:
            rows = (
                await conn.execute(text("SELECT authorizer_appid, disposition FROM inbound_messages"))
            ).all()
            deliveries = (await conn.execute(text("SELECT count(*) FROM deliveries"))).scalar_one()
        assert [tuple(r) for r in rows] == [("wxe0000000000099", "unknown_authorizer")]
        assert deliveries == 0 and crm.received == []


REPLIES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"msgtype": "text", "content": "你好 <b>&"}, {"MsgType": "text", "Content": "你好 <b>&"}),
    ({"msgtype": "image", "media_id": "IMG1"}, {"MsgType": "image", "Image": {"MediaId": "IMG1"}}),
    ({"msgtype": "voice", "media_id": "VOI1"}, {"MsgType": "voice", "Voice": {"MediaId": "VOI1"}}),
    (
        {"msgtype": "video", "media_id": "VID1", "title": "T", "description": "D"},
        {"MsgType": "video", "Video": {"MediaId": "VID1", "Title": "T", "Description": "D"}},
    ),
    (
        {"msgtype": "music", "title": "M", "musicurl": "http://m/1.mp3", "thumb_media_id": "TH1"},
        {
            "MsgType": "music",
            "Music": {
                "Title": "M",
                "Description": "",
                "MusicUrl": "http://m/1.mp3",
                "HQMusicUrl": "",
                "ThumbMediaId": "TH1",
            },
        },
    ),
    (
        {
            "msgtype": "news",
            "articles": [{"title": "A", "description": "B", "picurl": "http://p", "url": "http://u"}],
        },
        {
            "MsgType": "news",
            "ArticleCount": "1",
            "Articles": {"item": {"Title": "A", "Description": "B", "PicUrl": "http://p", "Url": "http://u"}},
        },
    ),
]


@pytest.mark.parametrize(("answer", "expected"), REPLIES, ids=[r[0]["msgtype"] for r in REPLIES])
async def test_the_reply_subscriber_answers_with_a_passive_reply(
    database_url: str,
    secret_box: SecretBox,
    subscribers: dict[str, tuple[Subscriber, str]],
    answer: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    crm, _ = subscribers["crm"]
    ops, _ = subscribers["ops"]
    crm.reply = {"reply": answer}
    subscriptions = [subscription("crm", subscribers, reply=True), subscription("ops", subscribers)]
    async with forwarding(database_url, secret_box, subscriptions) as world:
        relayed = await relay(world, {"MsgType": "text", "Content": "menu?"})

        reply = passive_reply_tree(relayed["body"])
        sent = relayed["message"]
        assert reply.pop("ToUserName") == sent["FromUserName"]
        assert reply.pop("FromUserName") == sent["ToUserName"]
        assert reply.pop("CreateTime").isdigit()
        assert reply == expected
        # the reply subscriber's delivery counts; the other subscriber gets the message as well
        assert len(await wait_status(world, "delivered", 2)) == 2
        assert crm.received[0].payload["id"] != ops.received[0].payload["id"]


def passive_reply_tree(body: str) -> dict[str, Any]:
    """The decrypted passive reply (decrypted by wechatpy) with its nested blocks."""
    from wechatpy.crypto import WeChatCrypto

    from gateway.xml import flatten, parse_xml, tree

    outer = flatten(parse_xml(body))
    crypto = WeChatCrypto(RETAIL["token"], RETAIL["aes_key"], RETAIL["appid"])
    plain = crypto.decrypt_message(body, outer["MsgSignature"], outer["TimeStamp"], outer["Nonce"])
    return tree(parse_xml(plain))


@pytest.mark.parametrize(
    ("status", "answer", "delay_s", "warned"),
    [
        (200, b"<html>not json</html>", 0.0, True),
        (200, {"reply": {"msgtype": "text"}}, 0.0, True),
        (200, {"reply": {"msgtype": "fax", "content": "x"}}, 0.0, True),
        (200, None, 0.0, False),
        (200, {"reply": {"msgtype": "text", "content": "too late"}}, 2.5, False),
        (500, {"reply": {"msgtype": "text", "content": "broken"}}, 0.0, False),
    ],
    ids=["garbage", "missing-field", "unknown-type", "empty", "late", "error"],
)
async def test_without_a_usable_reply_wechat_gets_success_and_nothing_is_lost(
    database_url: str,
    secret_box: SecretBox,
    subscribers: dict[str, tuple[Subscriber, str]],
    caplog: pytest.LogCaptureFixture,
    status: int,
    answer: Any,
    delay_s: float,
    warned: bool,
) -> None:
    crm, _ = subscribers["crm"]
    crm.status, crm.reply, crm.delay_s = status, answer, delay_s
    # The reply budget leaves a slow, loaded machine time to deliver and read an answer that comes at
    # once (the warned cases; 0.6 s was once too little in CI); the late answer comes well after it.
    policy = DeliveryPolicy(
        attempt_timeout_s=4.0,
        reply_wait_s=1.5,
        first_retry_s=0.05,
        max_retry_s=0.1,
        max_age_s=60,
        poll_s=0.05,
    )
    async with forwarding(
        database_url, secret_box, [subscription("crm", subscribers, reply=True)], policy
    ) as world:
        with caplog.at_level(logging.WARNING, logger="gateway.callbacks.inbox"):
            relayed = await relay(world, {"MsgType": "text", "Content": "hi"})

        assert relayed["body"] == "success"
        assert any("no usable reply" in r.getMessage() for r in caplog.records) == warned
        if status != 200:
            crm.status, crm.reply = 200, None  # it recovers: the retry delivers
        (record,) = await wait_status(world, "delivered")
        assert record["attempts"] == (2 if status != 200 else 1)
        assert len(set(crm.delivered_ids)) == 1


async def test_a_failing_subscriber_is_retried_with_backoff_until_it_takes_the_message(
    database_url: str, secret_box: SecretBox, subscribers: dict[str, tuple[Subscriber, str]]
) -> None:
    crm, _ = subscribers["crm"]
    crm.status = 503
    async with forwarding(database_url, secret_box, [subscription("crm", subscribers)]) as world:
        await relay(world, {"MsgType": "text", "Content": "persist"})
        await crm.wait_for(4)
        (pending,) = await wait_status(world, "pending")
        assert pending["last_status"] == 503 and pending["last_error"] == "HTTP 503"
        crm.status = 200

        (delivered,) = await wait_status(world, "delivered")
        ids = {d.delivery_id for d in crm.received}
        assert ids == {delivered["id"]}  # the same id on every retry
        assert delivered["attempts"] == len(crm.received)


def test_retry_delays_double_from_one_second_up_to_five_minutes_with_jitter() -> None:
    policy, rng = DeliveryPolicy(), random.Random(7)
    for attempts in range(1, 40):
        documented = min(2 ** (attempts - 1), 300)
        delays = [policy.retry_delay(attempts, rng) for _ in range(50)]
        assert all(documented <= d <= min(documented * 1.2, 300) for d in delays)
        if documented < 250:
            assert len(set(delays)) > 1  # jittered: replicas retrying together spread out
    give_up = policy.max_age_s
    assert give_up == 24 * 3600


async def test_dead_letters_after_the_deadline_and_replays(
    database_url: str, secret_box: SecretBox, subscribers: dict[str, tuple[Subscriber, str]]
) -> None:
    crm, _ = subscribers["crm"]
    crm.status = 503
    closed = {"client": "crm", "url": "http://127.0.0.1:9/inbox?key=abc", "secret": CRM_SECRET}
    policy = DeliveryPolicy(
        attempt_timeout_s=1.0,
        reply_wait_s=0.5,
        first_retry_s=0.05,
        max_retry_s=0.1,
        max_age_s=0.5,
        poll_s=0.05,
    )
    subscriptions = [closed, subscription("crm", subscribers)]
    async with forwarding(database_url, secret_box, subscriptions, policy) as world:
        await relay(world, {"MsgType": "text", "Content": "dead?"})
        failed = {d["url"]: d for d in await wait_status(world, "failed", 2)}
        unreachable = failed["http://127.0.0.1:9/inbox"]  # listed without its query
        assert unreachable["last_error"] == "connection refused or host unreachable"
        down = failed[subscribers["crm"][1] + "/inbox"]
        assert (down["last_status"], down["last_error"]) == (503, "HTTP 503")
        assert unreachable["attempts"] >= 1 and down["attempts"] >= 1  # how many fit in 0.5 s varies

        as_crm = {"Authorization": f"Bearer {CLIENT_KEYS['crm']}"}
        assert (
            await world.gateway.post(f"/v1/deliveries/{down['id']}/replay", headers=as_crm)
        ).status_code == 403
        crm.status = 200  # back up: the replay delivers
        replayed = await world.gateway.post(f"/v1/deliveries/{down['id']}/replay", headers=ADMIN)
        assert replayed.status_code == 200 and replayed.json()["status"] == "pending"
        (delivered,) = await wait_status(world, "delivered")
        assert delivered["id"] == down["id"] and crm.delivered_ids == [down["id"]]

        # a subscription removed by a reload: its replay is dead-lettered again, saying why
        live = world.services.registry
        kept = tuple(s for s in live.current.subscriptions if s.url != closed["url"])
        live.swap(msgspec.structs.replace(live.current, subscriptions=kept))
        await world.gateway.post(f"/v1/deliveries/{unreachable['id']}/replay", headers=ADMIN)
        await asyncio.sleep(0.3)
        (again,) = await wait_status(world, "failed")
        assert again["last_error"] == "the subscription is no longer in the registry"

        await world.services.audit.flush()
        audit = await world.gateway.get(
            "/v1/audit-log", params={"action": "delivery_replayed"}, headers=ADMIN
        )
        assert [e["actor"] for e in audit.json()["items"]] == ["ops", "ops"]


async def test_a_slow_subscriber_does_not_hold_up_a_fast_one(
    database_url: str, secret_box: SecretBox, subscribers: dict[str, tuple[Subscriber, str]]
) -> None:
    crm, _ = subscribers["crm"]
    ops, _ = subscribers["ops"]
    ops.delay_s = 0.8
    policy = DeliveryPolicy(
        attempt_timeout_s=5.0, first_retry_s=0.05, max_retry_s=0.1, per_subscriber=1, poll_s=0.05
    )
    subscriptions = [subscription("crm", subscribers), subscription("ops", subscribers)]
    async with forwarding(database_url, secret_box, subscriptions, policy) as world:
        for n in range(6):
            relayed = await relay(world, {"MsgType": "text", "Content": f"m{n}"})
            assert relayed["body"] == "success"

        await crm.wait_for(6)
        assert len(ops.received) <= 2  # one at a time, 0.8 s each
        await ops.wait_for(6, timeout_s=15)


async def test_deliveries_api_validates_and_pages(
    database_url: str, secret_box: SecretBox, subscribers: dict[str, tuple[Subscriber, str]]
) -> None:
    async with forwarding(database_url, secret_box, [subscription("crm", subscribers)]) as world:
        for n in range(5):
            await relay(world, {"MsgType": "text", "Content": f"m{n}"})
        await wait_status(world, "delivered", 5)

        first = (await world.gateway.get("/v1/deliveries", params={"limit": 2}, headers=ADMIN)).json()
        second = (
            await world.gateway.get(
                "/v1/deliveries", params={"limit": 2, "cursor": first["next_cursor"]}, headers=ADMIN
            )
        ).json()
        third = (
            await world.gateway.get(
                "/v1/deliveries", params={"limit": 2, "cursor": second["next_cursor"]}, headers=ADMIN
            )
        ).json()
        ids = [d["id"] for page in (first, second, third) for d in page["items"]]
        assert len(ids) == len(set(ids)) == 5 and ids == sorted(ids, reverse=True)
        assert third["next_cursor"] is None

        async def get(params: dict[str, Any], key: str = "ops") -> Any:
            headers = {"Authorization": f"Bearer {CLIENT_KEYS[key]}"}
            return await world.gateway.get("/v1/deliveries", params=params, headers=headers)

        assert (await get({"status": "lost"})).status_code == 422
        assert (await get({"status": "lost"})).json()["error"]["message"].startswith("status: ")
        assert (await get({"cursor": "not-a-cursor"})).status_code == 400
        assert (await get({"limit": "0"})).status_code == 422
        assert (await get({}, key="audit")).status_code == 403
        assert (await world.gateway.get("/v1/deliveries")).status_code == 401
        assert (
            await world.gateway.post("/v1/deliveries/0123456789abcdef01234567/replay", headers=ADMIN)
        ).status_code == 404

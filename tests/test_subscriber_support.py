"""The subscriber stand-in (tests/support/subscriber.py) itself: it verifies signatures, records every
request and answers as its knobs say, in-process and on a real socket."""

from __future__ import annotations

import time

import httpx
import msgspec

from tests.support.subscriber import Subscriber, served_subscriber, sign

SECRET = "crm-webhook-secret"
DELIVERY = {
    "id": "dlv_1",
    "platform": "retail",
    "authorizer_appid": "wxa0000000000001",
    "received_at": 1_750_000_000,
    "message": {"MsgType": "text", "Content": "hi", "MsgId": "1"},
}


def signed(body: bytes, secret: str = SECRET, delivery_id: str = "dlv_1") -> dict[str, str]:
    """The headers the gateway sends with ``body``, signed with ``secret``."""
    timestamp = str(int(time.time()))
    return {
        "Content-Type": "application/json",
        "X-Gateway-Delivery": delivery_id,
        "X-Gateway-Timestamp": timestamp,
        "X-Gateway-Signature": sign(secret, timestamp, body),
    }


async def test_signed_and_forged_deliveries_are_told_apart() -> None:
    subscriber = Subscriber(SECRET, reply={"reply": {"msgtype": "text", "content": "hello"}})
    body = msgspec.json.encode(DELIVERY)
    transport = httpx.ASGITransport(app=subscriber.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://crm.test") as client:
        good = await client.post("/wechat/inbox", content=body, headers=signed(body))
        forged = await client.post("/wechat/inbox", content=body, headers=signed(body, "wrong", "dlv_2"))
        tampered_headers = signed(body, delivery_id="dlv_3")
        tampered = await client.post("/wechat/inbox", content=body + b" ", headers=tampered_headers)

    assert (good.status_code, good.json()) == (200, {"reply": {"msgtype": "text", "content": "hello"}})
    assert [forged.status_code, tampered.status_code] == [401, 401]
    first, second, third = subscriber.received
    assert (first.signature_ok, second.signature_ok, third.signature_ok) == (True, False, False)
    assert first.payload == DELIVERY and first.path == "/wechat/inbox"
    assert first.headers["x-gateway-delivery"] == first.delivery_id == "dlv_1"
    assert first.timestamp == first.headers["x-gateway-timestamp"]
    assert subscriber.delivered_ids == ["dlv_1"]


async def test_the_knobs_turn_while_it_serves_on_a_socket() -> None:
    body = msgspec.json.encode(DELIVERY)
    with served_subscriber(SECRET, status=500) as (subscriber, base_url):
        async with httpx.AsyncClient(base_url=base_url) as client:
            failed = await client.post("/", content=body, headers=signed(body))
            subscriber.status, subscriber.delay_s, subscriber.reply = 200, 0.2, b"<not json"
            started = time.monotonic()
            garbage = await client.post("/inbox", content=body, headers=signed(body))
            waited = time.monotonic() - started
        received = await subscriber.wait_for(2, timeout_s=1)

    assert (failed.status_code, failed.content) == (500, b"")
    assert (garbage.status_code, garbage.content) == (200, b"<not json")
    assert waited >= 0.2
    assert [d.status for d in received] == [500, 200]
    assert all(d.signature_ok for d in received)
    assert subscriber.delivered_ids == ["dlv_1"]  # the 500 did not count

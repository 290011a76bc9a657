"""The examples of docs/receiving-messages.md and the commented subscriptions of the example registry,
run against the gateway's own code so they cannot drift from it."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateway.callbacks.passive_replies import TextReply, parse_answer
from gateway.delivery.webhooks import WebhookSender, new_webhook_client, sign
from gateway.delivery.worker import DeliveryBody, delivery_body
from gateway.registry.model import load_registry
from gateway.store.deliveries import DueDelivery, new_record_id
from tests.support.subscriber import served_subscriber

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "receiving-messages.md").read_text()
EXAMPLE = ROOT / "config" / "registry.example.yaml"
SECRET = "crm-webhook-secret-0123"


def blocks(language: str) -> list[str]:
    """The fenced code blocks of the document in ``language``, in order."""
    return re.findall(rf"```{language}\n(.*?)```", DOC, flags=re.DOTALL)


@pytest.fixture
def receiver() -> dict[str, Any]:
    """The namespace of the document's Python receiver, run as a module (its server not started)."""
    (source,) = [b for b in blocks("python") if "def verify(" in b]
    namespace: dict[str, Any] = {"__name__": "receiver"}
    exec(compile(source, "docs/receiving-messages.md", "exec"), namespace)  # noqa: S102  # our own document
    namespace["SECRET"] = SECRET
    return namespace


@pytest.fixture
def served(receiver: dict[str, Any]) -> Iterator[str]:
    """The receiver's ``Receiver`` on a loopback socket; its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), receiver["Receiver"])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/wechat/inbox"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_verify_accepts_the_gateways_signature_and_nothing_else(receiver: dict[str, Any]) -> None:
    verify = receiver["verify"]
    body = b'{"id":"018f332ae47b297659a12d3f","message":{"MsgType":"text"}}'
    now = time.time()
    timestamp = str(int(now))
    signature = sign(SECRET, timestamp, body)

    assert verify(SECRET, timestamp, signature, body)
    assert verify(SECRET, timestamp, signature, body, now=now + 299)
    assert not verify(SECRET, timestamp, signature, body, now=now + 301)  # signed over 5 minutes ago
    assert not verify(SECRET, timestamp, signature, body, now=now - 301)  # or ahead
    assert not verify(SECRET, timestamp, signature, body + b" ")  # the body changed
    assert not verify("another-secret", timestamp, signature, body)
    assert not verify(SECRET, str(int(now) + 1), signature, body)  # the timestamp changed
    assert not verify(SECRET, timestamp, signature.removeprefix("sha256="), body)
    assert not verify(SECRET, "", signature, body)
    assert not verify(SECRET, f"-{timestamp}", signature, body)


async def test_the_receiver_takes_what_the_gateway_sends(receiver: dict[str, Any], served: str) -> None:
    def due(message: dict[str, str]) -> DueDelivery:
        now = time.time()
        return DueDelivery(
            id=new_record_id(now),
            message_id=new_record_id(now),
            client_id="crm",
            url=served,
            reply=True,
            attempts=0,
            give_up_at=now + 60,
            platform_id="retail",
            authorizer_appid="wxa0000000000001",
            received_at=now,
            message=json.dumps(message).encode(),
        )

    text = due({"MsgType": "text", "Content": "营业时间？", "MsgId": "1"})
    event = due({"MsgType": "event", "Event": "subscribe", "EventKey": ""})
    async with new_webhook_client() as http:
        sender = WebhookSender(http)

        async def send(item: DueDelivery, secret: str = SECRET) -> tuple[int | None, bytes]:
            outcome = await sender.send(served, secret, item.id, delivery_body(item), 5.0)
            return outcome.status, outcome.body

        status, answer = await send(text)
        assert status == 200
        assert parse_answer(answer) == TextReply(content="We got: 营业时间？")
        assert await send(text) == (200, b"{}")  # the same delivery again: taken, not acted on twice
        assert await send(event) == (200, b"{}")
        assert (await send(due({"MsgType": "text", "Content": "x"}), "wrong-secret"))[0] == 401
    assert receiver["done"] == {text.id, event.id}


@pytest.mark.parametrize("app_secret", ["new", "old"])
async def test_the_standard_webhooks_example_verifies_what_the_gateway_sends(
    app_secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The document's ``standardwebhooks`` verifier, configured with either secret of a rotation (the old
    one plain, converted by the document's one-liner), takes a real delivery and refuses it tampered."""
    new = "whsec_" + base64.b64encode(b"a new key of thirty-two bytes!!!").decode()
    converted = _converted(SECRET)
    monkeypatch.setenv("WEBHOOK_SECRET", new if app_secret == "new" else converted)
    (source,) = [b for b in blocks("python") if "standardwebhooks" in b]
    namespace: dict[str, Any] = {"__name__": "verifier"}
    exec(compile(source, "docs/receiving-messages.md", "exec"), namespace)  # noqa: S102  # our own document
    delivery_or_none = namespace["delivery_or_none"]

    body = b'{"id":"018f332ae47b297659a12d3f","message":{"MsgType":"text"}}'
    with served_subscriber(new) as (subscriber, url):
        async with new_webhook_client() as http:
            outcome = await WebhookSender(http).send(
                url, new, "018f332ae47b297659a12d3f", body, 5.0, previous_secrets=[SECRET]
            )
    assert outcome.ok
    (arrived,) = subscriber.received
    assert delivery_or_none(arrived.body, arrived.headers) == json.loads(body)
    assert delivery_or_none(arrived.body.replace(b"text", b"image"), arrived.headers) is None
    assert delivery_or_none(body, {k: v for k, v in arrived.headers.items() if k != "webhook-id"}) is None


def _converted(secret: str) -> str:
    """``secret`` turned into the whsec_ form by the document's own shell line."""
    (line,) = re.findall(r"`(python3 -c 'import base64.*?\"\$SECRET\")`", DOC)
    run = subprocess.run(
        ["sh", "-c", line, "sh"],
        env={**os.environ, "SECRET": secret},
        capture_output=True,
        text=True,
        check=True,
    )
    return run.stdout.strip()


def test_the_example_body_is_what_the_gateway_sends() -> None:
    (body,) = [b for b in blocks("json") if '"authorizer_appid"' in b]
    decoded = msgspec.json.decode(body.encode(), type=DeliveryBody)
    assert set(json.loads(body)) == set(DeliveryBody.__struct_fields__)
    assert f"X-Gateway-Delivery: {decoded.id}" in DOC  # the headers shown are this body's
    assert f"webhook-id: {decoded.id}" in DOC


def test_every_documented_reply_is_accepted() -> None:
    replies = [b for b in blocks("json") if b.lstrip().startswith('{"reply"')]
    kinds = [type(parse_answer(b.encode())).__name__ for b in replies]
    assert kinds == ["TextReply", "ImageReply", "VoiceReply", "VideoReply", "MusicReply", "NewsReply"]


def test_the_commented_subscriptions_of_the_example_registry_load(tmp_path: Path) -> None:
    """Uncommented (``# `` dropped from ``# subscriptions:`` and the indented lines after it), the block
    is a valid registry section."""
    lines = EXAMPLE.read_text().splitlines()
    start = lines.index("# subscriptions:")
    block = []
    for line in lines[start:]:
        if not (line == "# subscriptions:" or line.startswith("#   ")):
            break
        block.append(line.removeprefix("# "))
    uncommented = tmp_path / "registry.yaml"
    uncommented.write_text("\n".join([*lines, *block]) + "\n")
    env = {
        f"{prefix}_{suffix}": value
        for prefix in ("RETAIL", "FINANCE", "SERVICES")
        for suffix, value in (("APPSECRET", "s3cret-value"), ("TOKEN", "tok3nvalue"), ("AES_KEY", "A" * 43))
    } | {"CRM_WEBHOOK_SECRET": SECRET, "OPS_WEBHOOK_SECRET": "ops-webhook-secret"}

    crm, ops = load_registry(uncommented, env).subscriptions

    assert (crm.client, crm.reply, crm.secret.reveal()) == ("crm", True, SECRET)
    assert crm.matches("wxa0000000000001", "event", "click") and not crm.matches(
        "wxa0000000000001", "voice", ""
    )
    assert (ops.client, ops.authorizers, ops.types) == ("ops", ("wxa0000000000001",), ("event",))

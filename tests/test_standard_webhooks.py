"""Deliveries signed by the Standard Webhooks spec, verified as internal apps verify them: with the
``standardwebhooks`` library on what a real subscriber server received. The webhook-id is the same on
every retry, a rotation signs with every secret in use, a tampered body fails, and the deprecated
``X-Gateway-*`` headers still come along."""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from gateway.crypto import SecretBox, webhook_key
from gateway.delivery.webhooks import (
    WebhookSender,
    new_webhook_client,
    sign,
    sign_standard,
    standard_secret,
)
from gateway.delivery.worker import DeliveryPolicy
from gateway.errors import RegistryError
from gateway.registry.model import parse_registry
from tests.conftest import REGISTRY_YAML, registry_environ
from tests.support.subscriber import Delivery, served_subscriber
from tests.test_inbox import forwarding, relay, wait_status

NEW_SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
OLD_SECRET = "crm-webhook-secret-0123"  # a plain secret, as subscriptions had before whsec_
STRANGER = "whsec_" + base64.b64encode(b"not the subscriber's key at all").decode()
# The first retry comes after the test has turned the subscriber from failing to taking deliveries.
SLOW_RETRY = DeliveryPolicy(
    attempt_timeout_s=1.0, reply_wait_s=0.8, first_retry_s=0.4, max_retry_s=0.5, max_age_s=60, poll_s=0.05
)


def verified(secret: str | bytes, delivery: Delivery) -> object:
    """The body ``standardwebhooks`` returns for ``delivery`` under ``secret``; raises when it does not
    verify."""
    return Webhook(secret).verify(delivery.body, delivery.headers)


async def test_a_rotated_subscription_is_verified_with_either_secret_across_retries(
    database_url: str, secret_box: SecretBox
) -> None:
    with served_subscriber(NEW_SECRET, status=500) as (crm, url):
        subscription = {
            "client": "crm",
            "url": url + "/inbox",
            "secret": NEW_SECRET,
            "previous_secrets": [OLD_SECRET],
        }
        async with forwarding(database_url, secret_box, [subscription], SLOW_RETRY) as world:
            await relay(world, {"MsgType": "text", "Content": "rotate me"})
            await crm.wait_for(1)
            crm.status = 200
            first, retry = await crm.wait_for(2)
            (record,) = await wait_status(world, "delivered")

    assert record["attempts"] == 2
    for delivery in (first, retry):
        body = verified(NEW_SECRET, delivery)
        assert verified(standard_secret(OLD_SECRET), delivery) == body  # the app still on the old secret
        assert verified(OLD_SECRET.encode(), delivery) == body  # the raw key, as bytes
        assert len(delivery.headers["webhook-signature"].split(" ")) == 2
        with pytest.raises(WebhookVerificationError):
            verified(STRANGER, delivery)
        with pytest.raises(WebhookVerificationError):
            Webhook(NEW_SECRET).verify(delivery.body.replace(b"rotate me", b"rotate us"), delivery.headers)
        # The deprecated headers, signed with the current secret as before.
        assert delivery.signature_ok
        assert delivery.headers["x-gateway-signature"] == sign(
            NEW_SECRET, delivery.headers["x-gateway-timestamp"], delivery.body
        )
        assert delivery.headers["x-gateway-timestamp"] == delivery.headers["webhook-timestamp"]
    # Idempotency: one webhook-id for the delivery, on every attempt, as its id in the body.
    assert first.headers["webhook-id"] == retry.headers["webhook-id"] == record["id"]
    assert first.headers["x-gateway-delivery"] == record["id"]
    assert isinstance(body, dict) and body["id"] == record["id"]


async def test_a_plain_secret_verifies_as_whsec_of_its_bytes() -> None:
    """Secrets written before Standard Webhooks keep working: the app gives the library ``whsec_`` and the
    base64 of the secret's UTF-8 bytes (what ``standard_secret`` prints)."""
    body = b'{"id":"018f332ae47b297659a12d3f","message":{"MsgType":"text"}}'
    with served_subscriber(OLD_SECRET) as (subscriber, url):
        async with new_webhook_client() as http:
            outcome = await WebhookSender(http).send(url, OLD_SECRET, "018f332ae47b297659a12d3f", body, 5.0)
    assert outcome.ok
    (delivery,) = subscriber.received
    converted = "whsec_" + base64.b64encode(OLD_SECRET.encode()).decode()
    assert standard_secret(OLD_SECRET) == converted
    assert verified(converted, delivery) == {"id": "018f332ae47b297659a12d3f", "message": {"MsgType": "text"}}
    assert delivery.headers["webhook-signature"].count("v1,") == 1  # no rotation: one signature
    assert delivery.headers["webhook-id"] == delivery.headers["x-gateway-delivery"]
    assert delivery.signature_ok  # the deprecated X-Gateway-Signature verifies as before
    with pytest.raises(WebhookVerificationError):
        verified(standard_secret("crm-webhook-secret-0124"), delivery)


def test_signatures_follow_the_spec_by_hand() -> None:
    """The spec's construction, computed here without the gateway's or the library's code."""
    import hashlib
    import hmac

    key = bytes(range(32))
    expected = hmac.new(key, b"msg_1.1714550401.{}", hashlib.sha256).digest()
    assert (
        sign_standard([NEW_SECRET], "msg_1", "1714550401", b"{}")
        == "v1," + base64.b64encode(expected).decode()
    )
    assert webhook_key(NEW_SECRET) == key
    assert webhook_key(NEW_SECRET.rstrip("=")) == key  # unpadded base64 is taken, as the libraries take it
    # The same secret twice signs once.
    once = sign_standard([NEW_SECRET], "m", "1", b"")
    assert sign_standard([NEW_SECRET, NEW_SECRET], "m", "1", b"") == once


def test_signatures_of_now_verify_and_old_ones_do_not() -> None:
    now = str(int(time.time()))
    headers = {"webhook-id": "m1", "webhook-timestamp": now}
    signature = sign_standard([NEW_SECRET], "m1", now, b"{}")
    assert Webhook(NEW_SECRET).verify(b"{}", headers | {"webhook-signature": signature}) == {}
    stale = str(int(time.time()) - 3600)
    with pytest.raises(WebhookVerificationError):
        Webhook(NEW_SECRET).verify(
            b"{}",
            {"webhook-id": "m1", "webhook-timestamp": stale}
            | {"webhook-signature": sign_standard([NEW_SECRET], "m1", stale, b"{}")},
        )


def _registry(subscription: Mapping[str, object]) -> str:
    import yaml

    return REGISTRY_YAML + yaml.safe_dump({"subscriptions": [dict(subscription)]})


@pytest.mark.parametrize(
    ("secrets", "path", "problem"),
    [
        ({"secret": "whsec_not*base64"}, "subscriptions[0].secret", "base64"),
        ({"secret": "whsec_"}, "subscriptions[0].secret", "at least one byte"),
        (
            {"secret": NEW_SECRET, "previous_secrets": ["whsec_%%%%"]},
            "subscriptions[0].previous_secrets[0]",
            "base64",
        ),
        ({"secret": NEW_SECRET, "previous_secrets": [""]}, "subscriptions[0].previous_secrets[0]", "empty"),
        (
            {"secret": NEW_SECRET, "previous_secrets": [NEW_SECRET]},
            "subscriptions[0].previous_secrets[0]",
            "same as secret",
        ),
    ],
)
def test_the_registry_refuses_unusable_webhook_secrets_naming_the_path_only(
    secrets: dict[str, object], path: str, problem: str
) -> None:
    document = _registry({"client": "crm", "url": "https://crm.internal/inbox"} | secrets)
    with pytest.raises(RegistryError) as caught:
        parse_registry(document, source="r.yaml", environ=registry_environ())
    message = str(caught.value)
    assert path in message and problem in message
    assert "not*base64" not in message and "%%%%" not in message and NEW_SECRET not in message


def test_the_registry_takes_previous_secrets() -> None:
    document = _registry(
        {
            "client": "crm",
            "url": "https://crm.internal/inbox",
            "secret": NEW_SECRET,
            "previous_secrets": [OLD_SECRET],
        }
    )
    (subscription,) = parse_registry(document, source="r.yaml", environ=registry_environ()).subscriptions
    assert [s.reveal() for s in subscription.previous_secrets] == [OLD_SECRET]
    assert OLD_SECRET not in repr(subscription)

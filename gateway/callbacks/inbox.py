"""The inbox: every user message and event of every authorizer, stored, then forwarded (SPEC §10).

As the ``MessageHandler`` of the message URL, it writes the message and one delivery per matching
subscription in one transaction before WeChat gets its answer, so a crash after the answer loses
nothing. WeChat's retries (same ``MsgId``; for events the same sender, time, event and key) find the
message stored and are answered ``success`` without a second delivery. Messages for an authorizer the
gateway does not know are recorded and not delivered.

The reply subscriber, if one matches, is attempted at once: a valid answer within ``reply_wait_s``
becomes the passive reply; silence, a late answer, an error or garbage get WeChat a plain ``success``
while the delivery goes on (and is retried) like any other.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable

import msgspec

from gateway.authorizations.service import AuthorizationService
from gateway.callbacks.messages import Reply
from gateway.callbacks.passive_replies import parse_answer, reply_fields
from gateway.delivery.subscriptions import Subscriptions
from gateway.delivery.worker import DeliveryService
from gateway.store.deliveries import DeliveryStore, DueDelivery, NewDelivery, NewMessage, new_record_id
from gateway.xml import UserMessage

__all__ = ["Inbox", "dedup_key"]

log = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()


def dedup_key(message: UserMessage) -> str:
    """What WeChat's retries of ``message`` share: its MsgId, or for an event (which has none) the
    sender, time, event and event key; hashed to a fixed width."""
    fields = message.fields
    msg_id = fields.get("MsgId") or fields.get("MsgID")
    if msg_id:
        material = f"id\n{msg_id}"
    else:
        material = "\n".join(
            (
                "event",
                message.from_user_name,
                str(message.create_time),
                message.msg_type,
                message.event,
                fields.get("EventKey", ""),
            )
        )
    return hashlib.sha256(material.encode()).hexdigest()


class Inbox:
    """Records and forwards user messages; answers with the reply subscriber's passive reply."""

    def __init__(
        self,
        subscriptions: Subscriptions,
        store: DeliveryStore,
        authorizations: AuthorizationService,
        deliveries: DeliveryService,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._subscriptions = subscriptions
        self._store = store
        self._authorizations = authorizations
        self._deliveries = deliveries
        self._clock = clock

    async def handle(self, platform_id: str, authorizer_appid: str, message: UserMessage) -> Reply | None:
        """Store ``message`` for its subscribers; the passive reply, if the reply subscriber gives one."""
        started = time.monotonic()
        now = self._clock()
        # The grants are cached briefly: no database read on the path to WeChat's answer, mostly.
        grants = await self._authorizations.grants(authorizer_appid)
        known = any(g.platform_id == platform_id and g.status != "revoked" for g in grants)
        targets = (
            self._subscriptions.matching(authorizer_appid, message.msg_type, message.event) if known else []
        )
        stored = NewMessage(
            id=new_record_id(now),
            platform_id=platform_id,
            authorizer_appid=authorizer_appid,
            dedup_key=dedup_key(message),
            msg_type=message.msg_type,
            event=message.event or None,
            received_at=now,
            disposition="forwarded" if targets else "unsubscribed" if known else "unknown_authorizer",
            message=_encoder.encode(message.document),
        )
        deliveries = [NewDelivery(new_record_id(now), s.client, s.url, s.reply) for s in targets]
        replying = next((d for d in deliveries if d.reply), None)
        lease = (self._deliveries.owner, now + self._deliveries.policy.lease_s)
        give_up_at = self._deliveries.give_up_at(now)
        if not await self._store.record(stored, deliveries, give_up_at=give_up_at, lease=lease):
            log.info("message to %s on %s: a retry of one already stored", authorizer_appid, platform_id)
            return None
        if not known:
            log.info("message to %s on %s: unknown authorizer, recorded only", authorizer_appid, platform_id)
        if len(deliveries) > (replying is not None):
            self._deliveries.wake_soon()
        if replying is None:
            return None
        attempt = self._deliveries.start(
            DueDelivery(
                id=replying.id,
                message_id=stored.id,
                client_id=replying.client_id,
                url=replying.url,
                reply=True,
                attempts=0,
                give_up_at=give_up_at,
                platform_id=platform_id,
                authorizer_appid=authorizer_appid,
                received_at=now,
                message=stored.message,
            )
        )
        budget = self._deliveries.policy.reply_wait_s - (time.monotonic() - started)
        done, _ = await asyncio.wait({attempt}, timeout=max(budget, 0.0))
        if not done:
            log.info("delivery %s: no reply in time; WeChat gets success", replying.id)
            return None
        outcome = attempt.result()
        if outcome is None or not outcome.ok:
            return None
        try:
            reply = parse_answer(outcome.body)
        except ValueError as exc:
            log.warning(
                "delivery %s: %s answered with no usable reply: %s", replying.id, replying.client_id, exc
            )
            return None
        return None if reply is None else Reply(message=reply_fields(reply))

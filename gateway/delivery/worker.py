"""Delivering inbound messages to subscribers: at least once, by whichever replica claims them first.

Every replica runs the worker. It claims due deliveries from the database under a lease, at most
``per_subscriber`` in flight for each (client, URL) in this process, so one slow subscriber fills only
its own slots and never delays the others. A failed attempt is retried after 1 s, 2 s, 4 s … (jittered,
capped at 5 minutes) until 24 hours have passed since the message arrived; then it is dead-lettered.
The worker is woken as soon as this process stores a message, and polls for the rest (other replicas'
messages, retries falling due, leases of crashed replicas running out).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from gateway.delivery.subscriptions import Subscriptions
from gateway.delivery.webhooks import Outcome, WebhookSender
from gateway.errors import DeliveryUnknown
from gateway.registry.model import Subscription
from gateway.store.audit_trail import AuditTrail
from gateway.store.deliveries import DeliveryRecord, DeliveryStore, DueDelivery

__all__ = ["DeliveryBody", "DeliveryPolicy", "DeliveryService", "delivery_body"]

log = logging.getLogger(__name__)

WAKE_DELAY_S = 0.01


class DeliveryBody(msgspec.Struct, frozen=True):
    """The JSON POSTed to a subscriber; ``id`` is the delivery's (also ``webhook-id``)."""

    id: str
    platform: str
    authorizer_appid: str
    received_at: int  # Unix seconds
    message: msgspec.Raw  # every element of the decrypted XML, values as strings


_encoder = msgspec.json.Encoder()


def delivery_body(due: DueDelivery) -> bytes:
    """The body of ``due``: the same bytes on every attempt, so its signature only changes with time."""
    return _encoder.encode(
        DeliveryBody(
            due.id, due.platform_id, due.authorizer_appid, int(due.received_at), msgspec.Raw(due.message)
        )
    )


@dataclass(frozen=True)
class DeliveryPolicy:
    """The pace of delivery (SPEC §10); tests shorten it."""

    attempt_timeout_s: float = 10.0
    reply_wait_s: float = 4.0  # WeChat waits 5 s for the answer; the rest is the gateway's margin
    first_retry_s: float = 1.0
    max_retry_s: float = 300.0
    max_age_s: float = 24 * 3600.0
    per_subscriber: int = 4
    poll_s: float = 0.5

    @property
    def lease_s(self) -> float:
        """How long a claim holds: an attempt's whole timeout, and a margin to write its outcome."""
        return self.attempt_timeout_s + 5.0

    def retry_delay(self, attempts: int, rng: random.Random) -> float:
        """The wait after the ``attempts``-th failed attempt: doubling, capped, jittered upwards (the
        documented delay is the least one waits)."""
        base = min(self.first_retry_s * 2 ** min(attempts - 1, 30), self.max_retry_s)
        jittered: float = base * rng.uniform(1.0, 1.2)
        return min(jittered, self.max_retry_s)


class DeliveryService:
    """Attempts deliveries (for the inbox's reply subscriber at once, for the rest from the worker)."""

    def __init__(
        self,
        subscriptions: Subscriptions,
        store: DeliveryStore,
        sender: WebhookSender,
        audit: AuditTrail,
        *,
        owner: str,
        policy: DeliveryPolicy | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._subscriptions = subscriptions
        self._store = store
        self._sender = sender
        self._audit = audit
        self.owner = owner
        self.policy = policy or DeliveryPolicy()
        self._clock = clock
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._in_flight: Counter[tuple[str, str]] = Counter()
        self._tasks: set[asyncio.Task[Outcome | None]] = set()

    def wake(self) -> None:
        """Look for due deliveries now (a replay was asked for, a slot came free)."""
        self._wake.set()

    def wake_soon(self) -> None:
        """Look for due deliveries in a moment (a message was just stored): the worker's claim and
        attempt run on this event loop, and WeChat's answer should go out before they start."""
        asyncio.get_running_loop().call_later(WAKE_DELAY_S, self._wake.set)

    def give_up_at(self, received_at: float) -> float:
        """When a message received at ``received_at`` stops being retried."""
        return received_at + self.policy.max_age_s

    def start(self, due: DueDelivery) -> asyncio.Task[Outcome | None]:
        """Attempt ``due`` (already leased by this owner) in a task of its own, which outlives the
        request that started it; its outcome is written whenever it ends."""
        destination = (due.client_id, due.url)
        self._in_flight[destination] += 1
        task = asyncio.create_task(self.attempt(due), name=f"delivery-{due.id}")
        self._tasks.add(task)

        def done(finished: asyncio.Task[Outcome | None]) -> None:
            self._tasks.discard(finished)
            self._in_flight[destination] -= 1
            if self._in_flight[destination] <= 0:
                del self._in_flight[destination]
            self._wake.set()  # a slot is free

        task.add_done_callback(done)
        return task

    async def attempt(self, due: DueDelivery) -> Outcome | None:
        """One attempt, its outcome written (fenced by the lease); None when the subscription is gone."""
        subscription = self._subscriptions.find(due.client_id, due.url)
        if subscription is None:
            await self._store.dead_letter(
                due.id, self.owner, None, "the subscription is no longer in the registry"
            )
            log.warning(
                "delivery %s dead-lettered: %s %s is no longer subscribed", due.id, due.client_id, due.url
            )
            return None
        outcome = await self._send(subscription, due)
        try:
            await self._settle(due, outcome)
        except Exception:  # the lease runs out and another attempt follows; nothing is lost
            log.exception("delivery %s: the outcome could not be written", due.id)
        return outcome

    async def _send(self, subscription: Subscription, due: DueDelivery) -> Outcome:
        return await self._sender.send(
            due.url,
            subscription.secret.reveal(),
            due.id,
            delivery_body(due),
            self.policy.attempt_timeout_s,
            previous_secrets=[previous.reveal() for previous in subscription.previous_secrets],
        )

    async def _settle(self, due: DueDelivery, outcome: Outcome) -> None:
        attempts = due.attempts + 1
        if outcome.ok and outcome.status is not None:
            await self._store.delivered(due.id, self.owner, outcome.status)
            log.info("delivery %s to %s: delivered after %d attempt(s)", due.id, due.client_id, attempts)
            return
        retry_at = self._clock() + self.policy.retry_delay(attempts, self._rng)
        if retry_at > due.give_up_at:
            await self._store.dead_letter(due.id, self.owner, outcome.status, outcome.describe())
            self._audit.record("gateway", "delivery_dead_lettered", detail=f"{due.id} to {due.client_id}")
            log.warning(
                "delivery %s to %s: dead-lettered after %d attempts (%s)",
                due.id,
                due.client_id,
                attempts,
                outcome.describe(),
            )
            return
        await self._store.retry_at(due.id, self.owner, retry_at, outcome.status, outcome.describe())
        log.info(
            "delivery %s to %s: attempt %d failed (%s); retry in %.1f s",
            due.id,
            due.client_id,
            attempts,
            outcome.describe(),
            retry_at - self._clock(),
        )

    async def deliver_due(self) -> int:
        """Claim what is due and has room, and start each; returns how many were started."""
        room = {
            destination: self.policy.per_subscriber - count for destination, count in self._in_flight.items()
        }
        claimed = await self._store.claim(
            self.owner,
            self.policy.lease_s,
            room,
            default_room=self.policy.per_subscriber,
            limit=max(1, self.policy.per_subscriber * max(1, len(self._subscriptions.current))),
        )
        for due in claimed:
            self.start(due)
        return len(claimed)

    async def run_worker(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop``; then wait (within one attempt's timeout) for attempts in flight."""
        while not stop.is_set():
            self._wake.clear()
            try:
                await self.deliver_due()
            except Exception:  # the database may be restarting: the deliveries wait for it
                log.exception("delivery pass failed")
            waiter = asyncio.ensure_future(self._wake.wait())
            stopper = asyncio.ensure_future(stop.wait())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait(
                    {waiter, stopper}, timeout=self.policy.poll_s, return_when=asyncio.FIRST_COMPLETED
                )
            waiter.cancel()
            stopper.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.policy.attempt_timeout_s)

    async def replay(self, delivery_id: str, *, actor: str) -> DeliveryRecord:
        """Deliver again (a dead letter, or a delivered one a subscriber lost); audited."""
        record = await self._store.replay(delivery_id, self.give_up_at(self._clock()))
        if record is None:
            raise DeliveryUnknown(delivery_id)
        self._audit.record(
            actor,
            "delivery_replayed",
            platform_id=record.platform,
            authorizer_appid=record.authorizer_appid,
            detail=f"{record.id} to {record.client}",
        )
        self.wake()
        return record

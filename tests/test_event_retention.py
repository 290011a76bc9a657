"""Event retention: pushes, messages and deliveries older than GATEWAY_EVENT_RETENTION_DAYS are deleted
once nothing waits on them, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time

import pytest
from sqlalchemy import func, select, text

from gateway.crypto import SecretBox
from gateway.errors import ConfigError
from gateway.settings import Settings
from gateway.store import Store, create_engine, upgrade
from gateway.store.deliveries import NewDelivery, NewMessage, new_record_id
from gateway.store.retention import EventRetention
from gateway.store.tables import AuthorizationCode, ComponentPush, Delivery, InboundMessage
from gateway.xml import Authorized, ComponentVerifyTicket

DAY = 86400.0
NOW = 1_700_000_000.0  # the store fixture's clock
COMPONENT = "wxc0mp000000001"
OWNER = "replica-1"


def at(store: Store, secret_box: SecretBox, when: float) -> Store:
    """The same database, seen by a store whose clock says ``when``."""
    return Store(store.engine, secret_box, clock=lambda: when)


def authorized(appid: str, code: str) -> Authorized:
    return Authorized(COMPONENT, 1, appid, code, 2, "pre")


async def count(store: Store, table: type) -> int:
    async with store.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def legacy_ticket_pushes(store: Store, count: int, when: float) -> None:
    """Verify tickets' pushes as they were logged before migration 0009 (without a payload)."""
    async with store.engine.begin() as conn:
        await conn.execute(
            ComponentPush.__table__.insert(),  # type: ignore[attr-defined]
            [
                {
                    "platform_id": "retail",
                    "msg_signature": f"sig{n}",
                    "nonce": f"old{n}",
                    "info_type": "component_verify_ticket",
                    "create_time": n,
                    "received_at": when,
                }
                for n in range(count)
            ],
        )


async def settled_event(store: Store, nonce: str) -> None:
    """An authorization event recorded by ``store`` and acted on."""
    event = authorized(f"wxa{nonce:0>13}", f"code-{nonce}")
    assert await store.record_push("retail", "sig", nonce, event)
    (recorded,) = [e for e in await store.pending_authorization_events() if e.event == event]
    await store.mark_processed(recorded.id)


async def test_old_pushes_go_unless_an_event_still_waits_on_them(store: Store, secret_box: SecretBox) -> None:
    await legacy_ticket_pushes(store, 12, NOW - 40 * DAY)  # three transactions of five
    old = at(store, secret_box, NOW - 40 * DAY)
    await settled_event(old, "acted")
    assert await old.record_push("retail", "sig", "waiting", authorized("wxa0000000000002", "code-2"))
    (waiting,) = await store.pending_authorization_events()
    recent = at(store, secret_box, NOW - 29 * DAY)
    await settled_event(recent, "recent")
    assert await recent.record_push("retail", "sig", "ticket", ComponentVerifyTicket(COMPONENT, 99, "t2"))

    assert await store.purge_pushes(NOW - 30 * DAY, chunk=5) == 13

    async with store.engine.connect() as conn:
        left = set((await conn.execute(select(ComponentPush.nonce))).scalars())  # type: ignore[call-overload]
    assert left == {"waiting", "recent"}
    assert [e.id for e in await store.pending_authorization_events()] == [waiting.id]
    # The newest ticket stays where it is kept: in component_tickets, not in the push log.
    ticket = await store.ticket("retail")
    assert ticket is not None and ticket.ticket == "t2"
    assert await store.purge_pushes(NOW - 30 * DAY, chunk=5) == 0


def message(when: float, key: str) -> NewMessage:
    return NewMessage(
        new_record_id(when), "retail", "wxa0000000000001", key, "text", None, when, "forwarded", b"{}"
    )


async def test_old_messages_go_with_their_deliveries_once_every_one_is_settled(store: Store) -> None:
    deliveries = store.deliveries
    old = NOW - 40 * DAY
    settled = [message(old + n, f"settled{n}") for n in range(3)]
    for n, m in enumerate(settled):
        done = [NewDelivery(new_record_id(old + n), "crm", "https://crm.test/a", reply=True)]
        assert await deliveries.record(m, done, give_up_at=old + DAY, lease=(OWNER, NOW + 60))
        assert await deliveries.delivered(done[0].id, OWNER, 200)
    # One of two deliveries failed for good, the other is still being retried: the message stays.
    busy = message(old + 10, "busy")
    failed, retrying = (
        NewDelivery(new_record_id(old + 10 + n), "crm", f"https://crm.test/{n}", reply=n == 0) for n in (0, 1)
    )
    assert await deliveries.record(busy, [failed], give_up_at=NOW + DAY, lease=(OWNER, NOW + 60))
    assert await deliveries.dead_letter(failed.id, OWNER, 500, "HTTP 500")
    assert await deliveries.record(
        message(old + 11, "other"), [], give_up_at=NOW + DAY
    )  # no subscription: a message without deliveries
    async with store.engine.begin() as conn:  # a second delivery of `busy`, pending
        await conn.execute(
            Delivery.__table__.insert().values(  # type: ignore[attr-defined]
                id=retrying.id,
                message_id=busy.id,
                client_id="crm",
                url=retrying.url,
                reply=False,
                status="pending",
                attempts=1,
                created_at=old,
                next_attempt_at=NOW,
                give_up_at=NOW + DAY,
            )
        )
    fresh = message(NOW - DAY, "fresh")
    assert await deliveries.record(
        fresh, [NewDelivery(new_record_id(NOW), "crm", "https://crm.test/a")], give_up_at=NOW + DAY
    )

    assert await deliveries.purge(NOW - 30 * DAY, chunk=2) == 4  # three settled, one without deliveries

    async with store.engine.connect() as conn:
        messages = set((await conn.execute(select(InboundMessage.dedup_key))).scalars())  # type: ignore[call-overload]
    assert messages == {"busy", "fresh"}
    assert await count(store, Delivery) == 3  # busy's two, fresh's one
    assert (await deliveries.get(failed.id)) is not None


async def no_pushes_left(store: Store) -> None:
    """Wait (up to 2 s: the task passes every 50 ms) until the push log is empty."""
    for _ in range(100):
        if await count(store, ComponentPush) == 0:
            return
        await asyncio.sleep(0.02)
    assert await count(store, ComponentPush) == 0


async def test_the_retention_task_purges_at_start_then_hourly_and_logs_counts(
    store: Store, secret_box: SecretBox, caplog: pytest.LogCaptureFixture
) -> None:
    clock = [NOW]
    await settled_event(at(store, secret_box, NOW - 31 * DAY), "a")
    retention = EventRetention(store, 30 * DAY, clock=lambda: clock[0])
    stop = asyncio.Event()
    with caplog.at_level(logging.INFO, logger="gateway.store.retention"):
        running = asyncio.create_task(retention.run(stop, every_s=0.05))
        try:
            await no_pushes_left(store)
            # 29 days old now, 31 after the clock moves: the next pass takes it.
            await settled_event(at(store, secret_box, NOW - 29 * DAY), "b")
            clock[0] = NOW + 2 * DAY
            await no_pushes_left(store)
        finally:
            stop.set()
            await asyncio.wait_for(running, 5)
    assert "1 pushes and 0 messages older than 30 days deleted" in caplog.text


async def code_at(
    store: Store, secret_box: SecretBox, when: float, code: str, outcome: str, *, owner: str = OWNER
) -> None:
    """A code that arrived at ``when`` (claimed for 30 s) and came to ``outcome``."""
    then = at(store, secret_box, when).authorizations
    assert (await then.claim_code(code, "retail", owner, 30.0)).won
    if outcome == "refused":
        await then.code_refused(code, owner, 61010, "expired")
    elif outcome == "unknown":
        await then.code_unknown(code, owner, "timed out")
    elif outcome == "exchanged":
        await then.code_exchanged(code, "retail", "wxa0000000000001")


async def codes_left(store: Store, codes: list[str]) -> dict[str, str]:
    """The state of each of ``codes`` still stored (rows are keyed by the code's sha-256)."""
    async with store.engine.connect() as conn:
        rows = await conn.execute(select(AuthorizationCode.code_sha256, AuthorizationCode.state))  # type: ignore[call-overload]
    states = dict(rows.all())
    digests = {code: hashlib.sha256(code.encode()).hexdigest() for code in codes}
    return {code: states[digest] for code, digest in digests.items() if digest in states}


async def test_codes_no_arrival_needs_go_a_day_after_exchanged_ones_after_the_event_retention(
    store: Store, secret_box: SecretBox
) -> None:
    olds = [f"old-{outcome}-{n}" for outcome in ("refused", "unknown", "claimed") for n in range(3)]
    for n, code in enumerate(olds):
        await code_at(store, secret_box, NOW - DAY - 60 - n, code, code.split("-")[1])
    await code_at(store, secret_box, NOW - 3600, "hour-refused", "refused")
    await code_at(store, secret_box, NOW - 3600, "hour-claimed", "claimed")  # lapsed, but an hour old
    await code_at(store, secret_box, NOW - 20, "live-claim", "claimed")  # being exchanged now
    await code_at(store, secret_box, NOW - 2 * DAY, "exchanged-2d", "exchanged")
    await code_at(store, secret_box, NOW - 31 * DAY, "exchanged-31d", "exchanged")
    codes = [*olds, "hour-refused", "hour-claimed", "live-claim", "exchanged-2d", "exchanged-31d"]
    assert len(await codes_left(store, codes)) == 14

    retention = EventRetention(store, 30 * DAY, clock=lambda: NOW)
    await retention.purge()
    assert await codes_left(store, codes) == {
        "hour-refused": "refused",
        "hour-claimed": "claimed",
        "live-claim": "claimed",
        "exchanged-2d": "exchanged",
    }
    # In chunks, as the other purges: more rows than one transaction takes.
    later = NOW + 3 * DAY
    assert await store.authorizations.purge_codes(later - DAY, later - DAY, chunk=2) == 4
    assert await codes_left(store, codes) == {}


async def test_a_short_event_retention_still_keeps_exchanged_codes_a_day(
    store: Store, secret_box: SecretBox
) -> None:
    await code_at(store, secret_box, NOW - 3600, "exchanged", "exchanged")
    await EventRetention(store, 600.0, clock=lambda: NOW).purge()
    assert (await store.authorizations.code_claim("exchanged")) is not None


async def test_keeping_events_forever_still_deletes_codes_no_arrival_needs(
    store: Store, secret_box: SecretBox
) -> None:
    await settled_event(at(store, secret_box, NOW - 400 * DAY), "ancient")
    await code_at(store, secret_box, NOW - 400 * DAY, "exchanged", "exchanged")
    await code_at(store, secret_box, NOW - 2 * DAY, "refused", "refused")
    assert await EventRetention(store, 0.0, clock=lambda: NOW).purge() == (0, 0)
    assert await codes_left(store, ["exchanged", "refused"]) == {"exchanged": "exchanged"}
    assert await count(store, ComponentPush) == 1


async def test_the_upgrade_dates_the_codes_already_stored(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade(engine, "0012")
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO authorization_codes"
                    " (code_sha256, platform_id, state, exchanged_at, claim_until) VALUES"
                    " ('a', 'retail', 'exchanged', 100.0, NULL), ('b', 'retail', 'claimed', NULL, 200.0),"
                    " ('c', 'retail', 'refused', NULL, NULL)"
                )
            )
        await upgrade(engine)
        async with engine.connect() as conn:
            rows = dict(
                (await conn.execute(text("SELECT code_sha256, arrived_at FROM authorization_codes"))).all()
            )
        assert (rows["a"], rows["b"]) == (100.0, 200.0)
        assert abs(rows["c"] - time.time()) < 60
    finally:
        await engine.dispose()


@pytest.mark.parametrize(("value", "days"), [(None, 30.0), ("0", 0.0), ("1", 1.0), ("36500", 36500.0)])
def test_the_setting(value: str | None, days: float) -> None:
    env = {"GATEWAY_SECRET_KEY": "A" * 43 + "="}
    if value is not None:
        env["GATEWAY_EVENT_RETENTION_DAYS"] = value
    assert Settings.from_environ(env).event_retention_days == days


@pytest.mark.parametrize("value", ["0.5", "36501", "-1", "a month"])
def test_a_bad_setting_is_named(value: str) -> None:
    env = {"GATEWAY_SECRET_KEY": "A" * 43 + "=", "GATEWAY_EVENT_RETENTION_DAYS": value}
    with pytest.raises(ConfigError, match="GATEWAY_EVENT_RETENTION_DAYS"):
        Settings.from_environ(env)

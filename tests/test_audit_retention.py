"""Audit retention: records older than GATEWAY_AUDIT_RETENTION_DAYS are deleted, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import os

import pytest

from gateway.errors import ConfigError
from gateway.settings import Settings
from gateway.store import Store
from gateway.store.audit import AuditRecord
from gateway.store.audit_trail import AuditTrail

DAY = 86400.0
NOW = 1_700_000_000.0  # the store fixture's clock


def _record(at: float, n: int) -> AuditRecord:
    return AuditRecord(at, "crm", "token.issued", "retail", f"wxa{n:013d}")


async def test_purge_deletes_what_is_older_in_chunks_and_keeps_the_rest(store: Store) -> None:
    old = [_record(NOW - 400 * DAY + n, n) for n in range(25)]
    kept = [_record(NOW - 300 * DAY, 100), _record(NOW - 1, 101), _record(NOW, 102)]
    await store.audit.append(old + kept)

    assert await store.audit.purge(NOW - 365 * DAY, chunk=10) == 25  # three transactions: 10, 10, 5
    left = await store.audit.recent(limit=100)
    assert sorted(r.authorizer_appid or "" for r in left) == sorted(r.authorizer_appid or "" for r in kept)
    assert await store.audit.purge(NOW - 365 * DAY, chunk=10) == 0


async def _records_become(store: Store, count: int) -> None:
    """Wait (up to 5 s: the trail flushes every 10 ms) until the log holds ``count`` records."""
    for _ in range(500):
        if len(await store.audit.recent()) == count:
            return
        await asyncio.sleep(0.01)
    assert len(await store.audit.recent()) == count


async def test_the_trail_purges_at_start_and_then_on_its_schedule(store: Store) -> None:
    clock = [NOW]
    trail = AuditTrail(store.audit, clock=lambda: clock[0])
    await store.audit.append([_record(NOW - 2 * DAY, 1)])
    stop = asyncio.Event()
    running = asyncio.create_task(trail.run(stop, interval_s=0.01, retention_s=DAY, purge_every_s=3600))
    try:
        await _records_become(store, 0)  # the first round purges

        # An old record written after that purge stays until the next one, an hour later on the trail's
        # clock, while the trail's own records (now) are kept.
        await store.audit.append([_record(NOW - 2 * DAY, 2)])
        trail.record("crm", "token.issued", platform_id="retail", authorizer_appid="wxa0000000000003")
        await _records_become(store, 2)
        clock[0] = NOW + 3599
        await asyncio.sleep(0.1)
        assert len(await store.audit.recent()) == 2
        clock[0] = NOW + 3600
        await _records_become(store, 1)
        assert [r.authorizer_appid for r in await store.audit.recent()] == ["wxa0000000000003"]
    finally:
        stop.set()
        await running


async def test_without_retention_nothing_is_deleted(store: Store) -> None:
    trail = AuditTrail(store.audit, clock=lambda: NOW)
    await store.audit.append([_record(NOW - 3650 * DAY, 1)])
    stop = asyncio.Event()
    running = asyncio.create_task(trail.run(stop, interval_s=0.01, retention_s=None))
    await asyncio.sleep(0.05)
    stop.set()
    await running
    assert len(await store.audit.recent()) == 1


def test_the_retention_setting() -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    assert Settings.from_environ({"GATEWAY_SECRET_KEY": key}).audit_retention_days == 365
    for value, days in (("0", 0.0), ("30", 30.0), ("2.5", 2.5)):
        env = {"GATEWAY_SECRET_KEY": key, "GATEWAY_AUDIT_RETENTION_DAYS": value}
        assert Settings.from_environ(env).audit_retention_days == days
    for bad in ("-1", "0.5", "40000", "a year", "nan"):
        with pytest.raises(ConfigError, match="GATEWAY_AUDIT_RETENTION_DAYS"):
            Settings.from_environ({"GATEWAY_SECRET_KEY": key, "GATEWAY_AUDIT_RETENTION_DAYS": bad})

"""`Database.write` on a SQLite file: on the event loop's thread, never waiting there for a lock, and
leaving the WAL's checkpoints to the writer thread."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy
import sqlalchemy.exc
from sqlalchemy import text

from gateway.crypto import SecretBox
from gateway.store import Store, create_engine, database, upgrade
from gateway.store.database import _CHECKPOINT_EVERY
from gateway.xml import ComponentVerifyTicket


@pytest.fixture
async def file_store(tmp_path: Path, secret_box: SecretBox) -> AsyncIterator[Store]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}")
    await upgrade(engine)
    store = Store(engine, secret_box, clock=lambda: 1_700_000_000.0)
    yield store
    await store.aclose()


async def test_a_write_lock_held_by_a_pooled_connection_never_blocks_the_loop(file_store: Store) -> None:
    assert await file_store.record_push("retail", "a" * 40, "n1", ComponentVerifyTicket("wxc1", 1, "first"))
    async with file_store.engine.connect() as holder:
        # An aiosqlite connection in the middle of a write: only this loop can let it commit.
        await holder.execute(text("UPDATE component_tickets SET received_at = received_at"))
        push = asyncio.create_task(
            file_store.record_push("retail", "b" * 40, "n2", ComponentVerifyTicket("wxc1", 2, "second"))
        )
        ticks = [time.monotonic()]
        for _ in range(20):  # the loop goes on while the push waits for the lock
            await asyncio.sleep(0.01)
            ticks.append(time.monotonic())
        assert not push.done()
        # Not a speed goal: a loop that waited in SQLite's busy handler would stall for its timeout.
        assert max(b - a for a, b in itertools.pairwise(ticks)) < 1.0
        await holder.commit()
    assert await asyncio.wait_for(push, 10) is True
    stored = await file_store.ticket("retail")
    assert stored is not None and stored.ticket == "second"


def wal_frames(database: Path) -> int:
    """Frames in the WAL now (a PASSIVE checkpoint reports them, and copies what it can)."""
    with sqlite3.connect(database) as conn:
        _busy, frames, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(frames)


async def test_the_wal_is_checkpointed_though_the_loop_never_does_it(
    file_store: Store, tmp_path: Path
) -> None:
    commits = 4 * _CHECKPOINT_EVERY
    for n in range(commits):  # one at a time: a transaction each, a WAL frame or more each
        ticket = ComponentVerifyTicket("wxc1", n, f"ticket-{n}")
        assert await file_store.record_push("retail", "a" * 40, f"n{n}", ticket)
    await asyncio.sleep(0.2)  # the last checkpoint, in the writer thread
    # Without checkpoints the WAL would hold a frame for every commit since the migrations.
    assert wal_frames(tmp_path / "gateway.db") < 2 * _CHECKPOINT_EVERY


async def test_writes_wait_for_a_running_checkpoint_so_the_wal_starts_over(
    file_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, release = threading.Event(), threading.Event()
    checkpoint = database._checkpoint

    def held_checkpoint(engine: sqlalchemy.Engine) -> None:
        started.set()
        release.wait(10)
        checkpoint(engine)

    monkeypatch.setattr(database, "_checkpoint", held_checkpoint)
    for n in range(_CHECKPOINT_EVERY):
        assert await file_store.record_push(
            "retail", "a" * 40, f"n{n}", ComponentVerifyTicket("wxc1", n, "t")
        )
    assert await asyncio.to_thread(started.wait, 10)
    late = asyncio.create_task(
        file_store.record_push("retail", "b" * 40, "late", ComponentVerifyTicket("wxc1", 10**6, "late"))
    )
    await asyncio.sleep(0.1)
    assert not late.done()  # queued behind the checkpoint
    release.set()
    assert await asyncio.wait_for(late, 10) is True
    # The checkpoint had copied every frame when the late push was written: the WAL started over.
    assert wal_frames(tmp_path / "gateway.db") <= 2


async def test_the_loops_connection_never_checkpoints(
    file_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "_CHECKPOINT_EVERY", 10**9)  # the writer thread's: none this time
    commits = 1_100  # past SQLite's own autocheckpoint of 1,000 frames
    for n in range(commits):
        ticket = ComponentVerifyTicket("wxc1", n, "t")
        assert await file_store.record_push("retail", "a" * 40, f"n{n}", ticket)
    # Every frame is still in the WAL: copying them, with an fsync, was never done on the loop.
    assert wal_frames(tmp_path / "gateway.db") >= commits


async def test_a_lock_held_past_the_writer_threads_timeout_is_the_drivers_error(
    file_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "SQLITE_CONNECT_ARGS", {"timeout": 0.2})
    async with file_store.engine.connect() as holder:
        await holder.execute(text("UPDATE component_tickets SET received_at = received_at"))
        # A store outage as every caller knows it (503 with Retry-After), not an internal signal.
        with pytest.raises(sqlalchemy.exc.OperationalError, match="database is locked"):
            await file_store.record_push("retail", "a" * 40, "n1", ComponentVerifyTicket("wxc1", 1, "t"))
        await holder.rollback()
    assert await file_store.record_push("retail", "a" * 40, "n1", ComponentVerifyTicket("wxc1", 1, "t"))

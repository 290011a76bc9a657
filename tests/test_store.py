"""The state store on SQLite and on the local PostgreSQL server, with the real migrations."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
import sqlalchemy.exc
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from gateway.crypto import SecretBox
from gateway.errors import SealedSecretError
from gateway.store import Store, create_engine, upgrade
from gateway.store.migrate import alembic_config
from gateway.store.store import StoredTicket
from gateway.store.tables import metadata
from gateway.xml import Authorized, ComponentVerifyTicket, Unauthorized


async def test_migrations_match_the_models(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade(engine)
        await upgrade(engine)  # idempotent: a second start-up finds nothing to do

        def diff(conn: object) -> list[object]:
            context = MigrationContext.configure(conn, opts={"compare_type": True})  # type: ignore[arg-type]
            return list(compare_metadata(context, metadata))

        async with engine.connect() as conn:
            assert await conn.run_sync(diff) == []
    finally:
        await engine.dispose()


async def test_concurrent_upgrades_on_one_database(database_url: str) -> None:
    engines = [create_engine(database_url) for _ in range(3)]
    try:
        if database_url.startswith("sqlite"):
            for engine in engines:  # one process per SQLite file: start-ups are sequential
                await upgrade(engine)
        else:
            await asyncio.gather(*(upgrade(engine) for engine in engines))
        async with engines[0].connect() as conn:
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
        assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()
    finally:
        for engine in engines:
            await engine.dispose()


async def test_ticket_is_stored_sealed_and_reopened(store: Store) -> None:
    event = ComponentVerifyTicket("wxc0mp000000001", 1413192605, "ticket@@@very-secret")
    assert await store.record_push("retail", "a" * 40, "n1", event) is True
    ticket = await store.ticket("retail")
    assert ticket is not None
    assert (ticket.ticket, ticket.create_time, ticket.received_at) == (
        "ticket@@@very-secret",
        1413192605,
        1_700_000_000.0,
    )
    async with store.engine.connect() as conn:
        raw = (await conn.execute(text("SELECT ticket_sealed FROM component_tickets"))).scalar_one()
    assert "very-secret" not in raw
    assert await store.ticket("finance") is None
    assert await store.ticket_receipts() == {"retail": 1_700_000_000.0}


async def test_same_signature_and_nonce_is_recorded_once(store: Store) -> None:
    event = Unauthorized("wxc1", 100, "wxa1")
    assert await store.record_push("retail", "a" * 40, "n1", event) is True
    # A replay under the same signature and nonce changes nothing.
    assert await store.record_push("retail", "a" * 40, "n1", Unauthorized("wxc1", 200, "wxa2")) is False
    assert [p.event for p in await store.pending_authorization_events()] == [event]
    # The same pair on another platform is another push.
    assert await store.record_push("finance", "a" * 40, "n1", event) is True


async def test_a_ticket_is_its_own_replay_guard(store: Store, secret_box: SecretBox) -> None:
    first = ComponentVerifyTicket("wxc1", 100, "ticket-1")
    assert await store.record_push("retail", "a" * 40, "n1", first) is True
    later = Store(store.engine, secret_box, clock=lambda: 1_700_000_060.0)
    # WeChat's retry of the same push, a minute later: nothing changes, not even when it was received.
    assert await later.record_push("retail", "a" * 40, "n1", first) is False
    # An older push, however late it comes, changes nothing either.
    older = ComponentVerifyTicket("wxc1", 99, "old")
    assert await later.record_push("retail", "b" * 40, "n2", older) is False
    assert await later.ticket("retail") == StoredTicket("ticket-1", 100, 1_700_000_000.0)
    # Another push of the same second is a new ticket: the later wins.
    assert await later.record_push("retail", "c" * 40, "n3", ComponentVerifyTicket("wxc1", 100, "t2")) is True
    assert await later.ticket("retail") == StoredTicket("t2", 100, 1_700_000_060.0)
    async with store.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM component_pushes"))).scalar_one() == 0
        identity = (await conn.execute(text("SELECT msg_signature, nonce FROM component_tickets"))).one()
    assert tuple(identity) == ("c" * 40, "n3")
    await later.aclose()


async def test_a_ticket_stored_before_pushes_were_named_gives_way_in_its_second(store: Store) -> None:
    assert await store.record_push("retail", "a" * 40, "n1", ComponentVerifyTicket("wxc1", 100, "old"))
    async with store.engine.begin() as conn:  # as migration 0009 leaves a ticket stored before it
        await conn.execute(text("UPDATE component_tickets SET msg_signature = NULL, nonce = NULL"))
    assert not await store.record_push("retail", "b" * 40, "n2", ComponentVerifyTicket("wxc1", 99, "x"))
    assert await store.record_push("retail", "a" * 40, "n1", ComponentVerifyTicket("wxc1", 100, "old"))
    stored = await store.ticket("retail")
    assert stored is not None and stored.ticket == "old"


async def test_concurrent_duplicates_are_recorded_exactly_once(store: Store) -> None:
    event = Unauthorized("wxc1", 100, "wxa1")
    results = await asyncio.gather(*(store.record_push("retail", "b" * 40, "n", event) for _ in range(20)))
    assert results.count(True) == 1
    assert len(await store.pending_authorization_events()) == 1


async def test_an_older_ticket_never_replaces_a_newer_one(store: Store) -> None:
    assert await store.record_push("retail", "1" * 40, "n1", ComponentVerifyTicket("wxc1", 200, "newer"))
    assert not await store.record_push("retail", "2" * 40, "n2", ComponentVerifyTicket("wxc1", 100, "older"))
    stored = await store.ticket("retail")
    assert stored is not None
    assert stored.ticket == "newer"
    assert await store.record_push("retail", "3" * 40, "n3", ComponentVerifyTicket("wxc1", 300, "newest"))
    stored = await store.ticket("retail")
    assert stored is not None
    assert stored.ticket == "newest"


async def test_a_batch_of_several_platforms_tickets_applies_each_on_its_own(store: Store) -> None:
    assert await store.record_push("retail", "1" * 40, "n1", ComponentVerifyTicket("wxc1", 100, "r1"))
    assert await store.record_push("finance", "2" * 40, "n2", ComponentVerifyTicket("wxc2", 100, "f1"))
    results = await asyncio.gather(  # one transaction: one upsert of two rows, RETURNING only one
        store.record_push("retail", "3" * 40, "n3", ComponentVerifyTicket("wxc1", 200, "r2")),
        store.record_push("finance", "4" * 40, "n4", ComponentVerifyTicket("wxc2", 50, "f0")),
    )
    assert results == [True, False]
    tickets = [await store.ticket(platform) for platform in ("retail", "finance")]
    assert [t.ticket if t else None for t in tickets] == ["r2", "f1"]


async def test_authorization_events_wait_for_processing(store: Store) -> None:
    authorized = Authorized("wxc1", 10, "wxa1", "queryauthcode@@@secret", 4000, "preauthcode@@@1")
    await store.record_push("retail", "c" * 40, "n1", authorized)
    await store.record_push("retail", "d" * 40, "n2", ComponentVerifyTicket("wxc1", 11, "t"))
    await store.record_push("finance", "e" * 40, "n3", Unauthorized("wxc2", 12, "wxa2"))
    pending = await store.pending_authorization_events()
    assert [p.event for p in pending] == [authorized, Unauthorized("wxc2", 12, "wxa2")]
    assert [p.platform_id for p in await store.pending_authorization_events("finance")] == ["finance"]
    async with store.engine.connect() as conn:
        payloads = (await conn.execute(text("SELECT payload_sealed FROM component_pushes"))).scalars().all()
    assert not any("queryauthcode@@@secret" in (p or "") for p in payloads)
    await store.mark_processed(pending[0].id)
    assert [p.event for p in await store.pending_authorization_events()] == [Unauthorized("wxc2", 12, "wxa2")]


async def test_a_different_secret_key_cannot_open_stored_tickets(
    database_url: str, secret_box: SecretBox
) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade(engine)
        await Store(engine, secret_box).record_push(
            "retail", "f" * 40, "n", ComponentVerifyTicket("wx", 1, "t")
        )
        with pytest.raises(SealedSecretError):
            await Store(engine, SecretBox(os.urandom(32))).ticket("retail")
    finally:
        await engine.dispose()


async def test_state_survives_a_new_engine(database_url: str, secret_box: SecretBox) -> None:
    for round_ in range(2):
        engine = create_engine(database_url)
        try:
            await upgrade(engine)
            store = Store(engine, secret_box)
            if round_ == 0:
                await store.record_push("retail", "9" * 40, "n", ComponentVerifyTicket("wx", 5, "kept"))
            else:
                stored = await store.ticket("retail")
                assert stored is not None
                assert stored.ticket == "kept"
        finally:
            await engine.dispose()


@pytest.fixture
def commits() -> Iterator[list[None]]:
    """One entry for each commit of any engine while the test runs (on a SQLite file, pushes are written
    on an engine of their own: `Database.write`)."""
    seen: list[None] = []

    def count(_conn: object) -> None:
        seen.append(None)

    sqlalchemy.event.listen(sqlalchemy.Engine, "commit", count)
    yield seen
    sqlalchemy.event.remove(sqlalchemy.Engine, "commit", count)


async def test_pushes_arriving_together_share_one_transaction(store: Store, commits: list[None]) -> None:
    tickets = [ComponentVerifyTicket("wxc1", 1000 + (n * 7) % 50, f"ticket-{n}") for n in range(50)]
    events = [Unauthorized("wxc1", 100, f"wxa{n}") for n in range(10)]
    results = await asyncio.gather(
        *(store.record_push("retail", "c" * 40, f"t{n}", t) for n, t in enumerate(tickets)),
        *(store.record_push("retail", "c" * 40, f"e{n}", e) for n, e in enumerate(events)),
        store.record_push("retail", "c" * 40, "t0", tickets[0]),  # a copy of the first, in the same batch
        # A replay of the second under its signature and nonce, with a newer ticket: stored nowhere.
        store.record_push("retail", "c" * 40, "t1", ComponentVerifyTicket("wxc1", 5000, "replayed")),
    )
    # The newest ticket of the batch replaced the stored one, though others were queued after it; the
    # other tickets changed nothing, and each authorization event was recorded.
    assert results == [n == 7 for n in range(50)] + [True] * 10 + [False, False]
    assert len(commits) == 1
    stored = await store.ticket("retail")
    assert stored is not None and stored.create_time == 1049 and stored.ticket == "ticket-7"
    assert len(await store.pending_authorization_events()) == 10
    async with store.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM component_pushes"))).scalar_one() == 10


class CountingBox(SecretBox):
    """Counts what it seals, by context."""

    def __init__(self) -> None:
        super().__init__(os.urandom(32))
        self.sealed: list[str] = []

    def seal(self, plaintext: str, *, context: str) -> str:
        self.sealed.append(context)
        return super().seal(plaintext, context=context)


async def test_a_batch_seals_only_the_ticket_it_keeps(store: Store) -> None:
    box = CountingBox()
    replica = Store(store.engine, box)
    tickets = [ComponentVerifyTicket("wxc1", 1000 + n, f"ticket-{n}") for n in range(20)]
    results = await asyncio.gather(
        *(replica.record_push("retail", "e" * 40, f"s{n}", t) for n, t in enumerate(tickets)),
        replica.record_push("retail", "e" * 40, "u", Unauthorized("wxc1", 100, "wxa1")),
    )
    assert results == [False] * 19 + [True, True]
    # The newest ticket, once, and the authorization event's payload; nineteen tickets were not sealed.
    assert sorted(box.sealed) == ["push:retail", "ticket:retail"]
    stored = await replica.ticket("retail")
    assert stored is not None and stored.ticket == "ticket-19"
    await replica.aclose()


async def test_a_caller_gone_before_the_commit_leaves_its_push_stored(store: Store) -> None:
    gone = asyncio.create_task(
        store.record_push("retail", "f" * 40, "gone", ComponentVerifyTicket("wxc1", 7, "kept"))
    )
    await asyncio.sleep(0)  # queued for the next batch
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert not await store.record_push("retail", "f" * 40, "next", ComponentVerifyTicket("wxc1", 6, "older"))
    # The first push was written all the same: its ticket, the newer, is the one kept; and it is a retry now.
    stored = await store.ticket("retail")
    assert stored is not None and stored.ticket == "kept"
    assert not await store.record_push("retail", "f" * 40, "gone", ComponentVerifyTicket("wxc1", 7, "kept"))


async def test_a_push_the_database_refuses_fails_alone(store: Store) -> None:
    broken = Unauthorized("wxc1", None, "wxa9")  # type: ignore[arg-type]
    good = [Unauthorized("wxc1", 100 + n, f"wxa{n}") for n in range(3)]
    results = await asyncio.gather(
        *(store.record_push("retail", "d" * 40, f"g{n}", e) for n, e in enumerate(good)),
        store.record_push("retail", "d" * 40, "broken", broken),
        store.record_push("retail", "d" * 40, "ticket", ComponentVerifyTicket("wxc1", 100, "kept")),
        return_exceptions=True,
    )
    assert results[:3] == [True] * 3 and results[4] is True
    assert isinstance(results[3], sqlalchemy.exc.IntegrityError)
    stored = await store.ticket("retail")
    assert stored is not None and stored.ticket == "kept"
    async with store.engine.connect() as conn:
        nonces = (await conn.execute(text("SELECT nonce FROM component_pushes ORDER BY nonce"))).scalars()
        assert list(nonces) == ["g0", "g1", "g2"]


def test_sqlite_files_keep_their_connections_and_memory_databases_still_open(tmp_path: Path) -> None:
    assert create_engine(f"sqlite+aiosqlite:///{tmp_path}/g.db").pool.size() == 15  # type: ignore[attr-defined]
    # One shared connection (SQLAlchemy's StaticPool): pool sizes would be refused.
    assert type(create_engine("sqlite+aiosqlite:///:memory:").pool).__name__ == "StaticPool"

"""Rotating the at-rest key: sealed values that name their key, previous keys that still open, and
``gateway rotate-secret-key`` re-sealing every sealed column on SQLite and PostgreSQL.

The database is seeded through the store (tickets, a pending authorization event, credentials, refresh
tokens, inbound messages) and read back through the store, so a context the rotation spelled differently
from the store module that seals it shows as a value that no longer opens.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from Crypto.Cipher import AES
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.cli.main import main
from gateway.crypto import SecretBox, key_id
from gateway.errors import ConfigError, SealedSecretError
from gateway.settings import Settings
from gateway.store import Store, create_engine, upgrade
from gateway.store.deliveries import NewDelivery, NewMessage, new_record_id
from gateway.store.rotation import SEALED_COLUMNS, ColumnReport, _Rotation, rotate_secrets
from gateway.store.tables import metadata
from gateway.xml import Authorized, ComponentVerifyTicket

OLD, NEW, STRANGER = os.urandom(32), os.urandom(32), os.urandom(32)
AUTHORIZATIONS = [
    ("retail", "wxa0000000000001"),
    ("retail", "wxb0000000000002"),
    ("finance", "wxa0000000000001"),
]
CREDENTIALS = ["component:retail", "component:finance", "authorizer:retail:wxa0000000000001", "jsapi:x", "z"]
SEEDED_ROWS = {  # non-null sealed values per table after seed()
    "component_tickets": 2,
    "component_pushes": 3,  # the authorization events; the verify tickets' pushes keep no payload
    "credentials": len(CREDENTIALS),
    "authorizations": len(AUTHORIZATIONS),
    "inbound_messages": 3,
}


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def legacy_seal(key: bytes, plaintext: str, context: str) -> str:
    """A value as the gateway sealed it before key ids: ``v1.`` + base64(nonce ‖ ciphertext ‖ tag)."""
    nonce = os.urandom(12)
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce)
    cipher.update(context.encode())
    ciphertext, tag = cipher.encrypt_and_digest(plaintext.encode())
    return "v1." + base64.urlsafe_b64encode(nonce + ciphertext + tag).decode()


# --- the box ---------------------------------------------------------------------------------------------


def test_a_sealed_value_names_its_key_by_an_id_that_reveals_nothing() -> None:
    box = SecretBox(NEW)
    sealed = box.seal("refreshtoken@@@abc", context="refresh:retail:wx1")
    assert box.key_id == key_id(NEW) == hashlib.sha256(NEW).hexdigest()[:8]
    assert sealed.startswith(f"v2.{box.key_id}.")
    assert box.is_current(sealed)
    assert b64(NEW) not in sealed and NEW.hex() not in sealed
    assert box.open(sealed, context="refresh:retail:wx1") == "refreshtoken@@@abc"


def test_previous_keys_open_but_never_seal() -> None:
    old_box = SecretBox(OLD)
    before = old_box.seal("ticket@@@1", context="ticket:retail")
    rotating = SecretBox(NEW, previous=[OLD])
    assert rotating.open(before, context="ticket:retail") == "ticket@@@1"
    assert not rotating.is_current(before)
    after = rotating.seal("ticket@@@1", context="ticket:retail")
    assert rotating.is_current(after)
    assert SecretBox(NEW).open(after, context="ticket:retail") == "ticket@@@1"
    with pytest.raises(SealedSecretError):
        old_box.open(after, context="ticket:retail")  # the old key alone: not any more
    with pytest.raises(SealedSecretError):
        rotating.open(before, context="ticket:finance")  # the context still binds under a previous key
    with pytest.raises(SealedSecretError):
        SecretBox(NEW).open(before, context="ticket:retail")


def test_legacy_values_open_under_whichever_key_sealed_them() -> None:
    legacy = legacy_seal(OLD, "refreshtoken@@@legacy", "refresh:retail:wx1")
    assert SecretBox(OLD).open(legacy, context="refresh:retail:wx1") == "refreshtoken@@@legacy"
    rotating = SecretBox(NEW, previous=[STRANGER, OLD])
    assert rotating.open(legacy, context="refresh:retail:wx1") == "refreshtoken@@@legacy"
    assert not rotating.is_current(legacy)
    with pytest.raises(SealedSecretError):
        SecretBox(NEW, previous=[STRANGER]).open(legacy, context="refresh:retail:wx1")


def test_previous_keys_are_read_from_the_environment() -> None:
    env = {
        "GATEWAY_SECRET_KEY": b64(NEW),
        "GATEWAY_PREVIOUS_SECRET_KEYS": f" {b64(STRANGER)} ,, {b64(OLD)} ",
    }
    box = Settings.from_environ(env).secret_box
    assert box.key_id == key_id(NEW)
    assert box.open(SecretBox(OLD).seal("x", context="c"), context="c") == "x"
    assert box.open(SecretBox(STRANGER).seal("y", context="c"), context="c") == "y"
    plain = Settings.from_environ({"GATEWAY_SECRET_KEY": b64(NEW)}).secret_box
    with pytest.raises(SealedSecretError):
        plain.open(SecretBox(OLD).seal("x", context="c"), context="c")


@pytest.mark.parametrize(
    ("previous", "problem"),
    [
        ("not base64 at all", "GATEWAY_PREVIOUS_SECRET_KEYS[1] is not valid base64"),
        (b64(b"k" * 16), "GATEWAY_PREVIOUS_SECRET_KEYS[1] must decode to 32 bytes, got 16"),
    ],
)
def test_a_bad_previous_key_is_named_by_position_never_shown(previous: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        SecretBox.from_base64(b64(NEW), previous=f"{b64(OLD)},{previous}")
    assert str(info.value) == problem
    assert previous not in str(info.value)
    assert b64(OLD) not in str(info.value) and b64(NEW) not in str(info.value)


# --- the rotation ----------------------------------------------------------------------------------------


def test_the_rotation_knows_every_sealed_column() -> None:
    in_tables = {
        (table.name, column.name)
        for table in metadata.sorted_tables
        for column in table.columns
        if column.name.endswith("_sealed")
    }
    assert {(sealed.table, sealed.column) for sealed in SEALED_COLUMNS} == in_tables


@dataclass
class Seeded:
    """The seeded database: its engine and the plaintexts it holds, by context."""

    engine: AsyncEngine
    values: dict[str, str]


@pytest.fixture
async def seeded(database_url: str) -> AsyncIterator[Seeded]:
    """Every sealed column filled under the OLD key, one credential in the legacy ``v1.`` form."""
    engine = create_engine(database_url)
    await upgrade(engine)
    store = Store(engine, SecretBox(OLD))
    values: dict[str, str] = {}
    for number, platform in enumerate(("retail", "finance")):
        values[f"ticket:{platform}"] = f"ticket@@@{platform}-{number}"
        ticket = ComponentVerifyTicket(f"wxc{number}", 100, values[f"ticket:{platform}"])
        assert await store.record_push(platform, "t" * 40, f"ticket-{number}", ticket)
    for number in range(SEEDED_ROWS["component_pushes"]):
        code = f"queryauthcode@@@{number}"
        event = Authorized(f"wxc{number}", 100, f"wxa{number}", code, 200, f"preauthcode@@@{number}")
        assert await store.record_push("retail", "a" * 40, f"auth-{number}", event)
        values[f"push:{code}"] = code
    for number, key in enumerate(CREDENTIALS):
        assert await store.credentials.try_lease(key, "seeder", 30)
        values[f"credential:{key}"] = f"token-{number}-" + "x" * number
        assert await store.credentials.save(
            key, "seeder", values[f"credential:{key}"], expires_at=2e9, renew_after=2e9
        )
    legacy = CREDENTIALS[-1]  # sealed before key ids existed
    async with engine.begin() as conn:
        table = metadata.tables["credentials"]
        sealed = legacy_seal(OLD, values[f"credential:{legacy}"], f"credential:{legacy}")
        await conn.execute(update(table).where(table.c.key == legacy).values(value_sealed=sealed))
    for platform, appid in AUTHORIZATIONS:
        values[f"refresh:{platform}:{appid}"] = f"refreshtoken@@@{platform}-{appid}"
        await store.authorizations.authorize(
            platform, appid, values[f"refresh:{platform}:{appid}"], frozenset({1})
        )
    for number in range(SEEDED_ROWS["inbound_messages"]):
        now = 1_700_000_000.0 + number
        message = NewMessage(
            new_record_id(now),
            "retail",
            "wxa0000000000001",
            f"m{number}",
            "text",
            None,
            now,
            "forwarded",
            f'{{"Content": "hello {number}"}}'.encode(),
        )
        assert await store.deliveries.record(
            message, [NewDelivery(new_record_id(now), "crm", "https://x.test")], give_up_at=2e9
        )
        values[f"message:{message.id}"] = message.message.decode()
    try:
        yield Seeded(engine, values)
    finally:
        await engine.dispose()


async def readable(store: Store, *, messages: bool = True) -> dict[str, str]:
    """Every sealed value of the seeded database as the gateway's own code opens it, keyed as in
    :class:`Seeded`. Messages are opened by claiming their deliveries: once only."""
    values: dict[str, str] = {}
    for platform in ("retail", "finance"):
        ticket = await store.ticket(platform)
        assert ticket is not None
        values[f"ticket:{platform}"] = ticket.ticket
    for event in await store.pending_authorization_events():
        assert isinstance(event.event, Authorized)
        values[f"push:{event.event.authorization_code}"] = event.event.authorization_code
    for credential in await store.credentials.get_many(""):
        assert credential.value is not None
        values[f"credential:{credential.key}"] = credential.value
    for platform, appid in AUTHORIZATIONS:
        refresh = await store.authorizations.refresh_token(platform, appid)
        assert refresh is not None
        values[f"refresh:{platform}:{appid}"] = refresh
    if messages:
        for due in await store.deliveries.claim("reader", 60, {}, default_room=10, limit=10):
            values[f"message:{due.message_id}"] = due.message.decode()
    return values


def without_messages(values: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in values.items() if not key.startswith("message:")}


async def raw_sealed(engine: AsyncEngine) -> dict[str, list[tuple[str, str]]]:
    """Every non-null sealed value, read straight from the tables, with its context: by table."""
    found: dict[str, list[tuple[str, str]]] = {}
    async with engine.connect() as conn:
        for sealed in SEALED_COLUMNS:
            table = metadata.tables[sealed.table]
            rows = (await conn.execute(select(table).where(table.c[sealed.column].is_not(None)))).mappings()
            found[sealed.table] = [(row[sealed.column], sealed.context_of(row)) for row in rows]
    return found


def counts(reports: list[ColumnReport]) -> dict[str, tuple[int, int]]:
    assert all(report.ok for report in reports), reports
    return {report.table: (report.resealed, report.current) for report in reports}


async def test_rotation_reseals_every_column_under_the_new_key(seeded: Seeded) -> None:
    rotating = SecretBox(NEW, previous=[OLD])
    replica = Store(seeded.engine, rotating)  # a replica deployed with the new key and the old one
    assert await readable(replica, messages=False) == without_messages(seeded.values)

    reports = await rotate_secrets(seeded.engine, rotating, batch_size=2)  # batches across every table

    assert counts(reports) == {table: (rows, 0) for table, rows in SEEDED_ROWS.items()}
    found = await raw_sealed(seeded.engine)
    assert {table: len(values) for table, values in found.items()} == SEEDED_ROWS
    for values in found.values():
        for sealed, context in values:
            assert sealed.startswith(f"v2.{key_id(NEW)}."), context
            with pytest.raises(SealedSecretError):
                SecretBox(OLD).open(sealed, context=context)
    with pytest.raises(SealedSecretError):
        await Store(seeded.engine, SecretBox(OLD)).ticket("retail")
    assert await readable(replica, messages=False) == without_messages(seeded.values)
    # The new key alone opens everything: the old one may go.
    assert await readable(Store(seeded.engine, SecretBox(NEW))) == seeded.values

    again = await rotate_secrets(seeded.engine, rotating, batch_size=3)
    assert counts(again) == {table: (0, rows) for table, rows in SEEDED_ROWS.items()}
    assert await raw_sealed(seeded.engine) == found  # idempotent: not one value rewritten


async def test_a_value_a_replica_writes_during_the_rotation_is_kept(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    rotating = SecretBox(NEW, previous=[OLD])
    replica = Store(seeded.engine, rotating)
    original = _Rotation._reseal
    renewed = CREDENTIALS[0]

    async def renewal_in_between(self: _Rotation, rows: list[object]) -> object:
        # Between the rotation's read of the batch and its write, a replica renews a token.
        if self.report.table == "credentials" and not self.report.resealed:
            assert await replica.credentials.try_lease(renewed, "replica", 30)
            assert await replica.credentials.save(
                renewed, "replica", "renewed", expires_at=2e9, renew_after=2e9
            )
        return await original(self, rows)  # type: ignore[arg-type]

    monkeypatch.setattr(_Rotation, "_reseal", renewal_in_between)
    reports = await rotate_secrets(seeded.engine, rotating, batch_size=2)

    assert counts(reports)["credentials"] == (len(CREDENTIALS) - 1, 1)  # read again: already new
    credential = await Store(seeded.engine, SecretBox(NEW)).credentials.get(renewed)
    assert credential is not None and credential.value == "renewed"


# --- the command -----------------------------------------------------------------------------------------


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``GATEWAY_*`` variable: each test sets the database and the keys it means."""
    for name in list(os.environ):
        if name.startswith("GATEWAY_") and name != "GATEWAY_TEST_POSTGRES":
            monkeypatch.delenv(name)


async def gateway(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``gateway ARGS`` in this process (in a thread: it runs its own event loop)."""
    capsys.readouterr()
    status = await asyncio.to_thread(main, list(args))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.usefixtures("environment")
async def test_the_command_rotates_and_prints_counts_per_table(
    seeded: Seeded, database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GATEWAY_DATABASE_URL", database_url)
    monkeypatch.setenv("GATEWAY_SECRET_KEY", b64(NEW))
    monkeypatch.setenv("GATEWAY_PREVIOUS_SECRET_KEYS", b64(OLD))

    status, out, err = await gateway(capsys, "rotate-secret-key", "--batch-size", "2")

    assert (status, err) == (0, "")
    kid = key_id(NEW)
    assert out.splitlines() == [
        f"{sealed.table}.{sealed.column}: {SEEDED_ROWS[sealed.table]} re-sealed, 0 already under key {kid}"
        for sealed in SEALED_COLUMNS
    ]
    monkeypatch.delenv("GATEWAY_PREVIOUS_SECRET_KEYS")  # step 3: the old key is gone
    status, out, err = await gateway(capsys, "rotate-secret-key")
    assert (status, err) == (0, "")
    assert f"credentials.value_sealed: 0 re-sealed, {len(CREDENTIALS)} already under key {kid}" in out


async def seal_one_under_a_stranger_key(
    seeded: Seeded, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> str:
    """One refresh token sealed under a key the command is not given, and the command's environment
    (NEW, with OLD as the previous key); the sealed value."""
    lost = SecretBox(STRANGER).seal("stranger-token", context="refresh:retail:wxb0000000000002")
    table = metadata.tables["authorizations"]
    async with seeded.engine.begin() as conn:
        await conn.execute(
            update(table)
            .where(table.c.authorizer_appid == "wxb0000000000002")
            .values(refresh_token_sealed=lost)
        )
    monkeypatch.setenv("GATEWAY_DATABASE_URL", database_url)
    monkeypatch.setenv("GATEWAY_SECRET_KEY", b64(NEW))
    monkeypatch.setenv("GATEWAY_PREVIOUS_SECRET_KEYS", b64(OLD))
    return lost


@pytest.mark.usefixtures("environment")
async def test_the_command_names_rows_no_key_opens_and_fails(
    seeded: Seeded, database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lost = await seal_one_under_a_stranger_key(seeded, database_url, monkeypatch)

    status, out, err = await gateway(capsys, "rotate-secret-key")

    assert status == 1
    assert (
        "gateway: authorizations (platform_id=retail, authorizer_appid=wxb0000000000002): "
        "refresh_token_sealed opens under no key given"
    ) in err
    assert "GATEWAY_PREVIOUS_SECRET_KEYS" in err
    assert "authorizations.refresh_token_sealed: 2 re-sealed" in out
    assert "credentials.value_sealed: 5 re-sealed" in out  # the rest is rotated all the same
    for secret in (lost, "stranger-token", b64(NEW), b64(OLD), b64(STRANGER)):
        assert secret not in out + err
    found = await raw_sealed(seeded.engine)
    assert (lost, "refresh:retail:wxb0000000000002") in found["authorizations"]  # left as it was


@pytest.mark.usefixtures("environment")
async def test_the_command_prints_json_per_column_naming_rows_never_values(
    seeded: Seeded, database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lost = await seal_one_under_a_stranger_key(seeded, database_url, monkeypatch)

    status, out, err = await gateway(capsys, "rotate-secret-key", "--json")

    assert status == 1
    reports = json.loads(out)  # stdout is the one document; the advice stays on stderr
    assert [(r["table"], r["column"]) for r in reports] == [(c.table, c.column) for c in SEALED_COLUMNS]
    by_table = {r["table"]: r for r in reports}
    assert by_table["credentials"] == {
        "table": "credentials",
        "column": "value_sealed",
        "resealed": len(CREDENTIALS),
        "current": 0,
        "key_id": key_id(NEW),
        "unreadable": [],
        "unsettled": [],
        "ok": True,
    }
    assert by_table["authorizations"]["unreadable"] == [
        "authorizations (platform_id=retail, authorizer_appid=wxb0000000000002)"
    ]
    assert by_table["authorizations"]["ok"] is False
    assert "GATEWAY_PREVIOUS_SECRET_KEYS" in err
    for secret in (lost, "stranger-token", b64(NEW), b64(OLD), b64(STRANGER)):
        assert secret not in out + err


@pytest.mark.usefixtures("environment")
async def test_the_command_needs_a_valid_key(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GATEWAY_DATABASE_URL", sqlite_url)
    status, _, err = await gateway(capsys, "rotate-secret-key")
    assert status == 2
    assert "GATEWAY_SECRET_KEY is not set" in err
    monkeypatch.setenv("GATEWAY_SECRET_KEY", b64(NEW))
    monkeypatch.setenv("GATEWAY_PREVIOUS_SECRET_KEYS", "bad!")
    status, _, err = await gateway(capsys, "rotate-secret-key")
    assert status == 2
    assert "GATEWAY_PREVIOUS_SECRET_KEYS[0] is not valid base64" in err
    with pytest.raises(SystemExit) as usage:
        main(["rotate-secret-key", "--batch-size", "0"])
    assert usage.value.code == 2

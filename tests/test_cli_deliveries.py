"""``gateway deliveries list [--status S] [--client ID] [--limit N] [--before ID] [--json]`` and
``gateway deliveries replay ID… [--json]``, run in-process against a SQLite file seeded through the store."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from gateway.cli.main import main
from gateway.crypto import SecretBox
from gateway.store import Store, create_engine, upgrade
from gateway.store.audit import AuditRecord
from gateway.store.deliveries import DeliveryRecord, NewDelivery, NewMessage, new_record_id
from tests.conftest import REGISTRY_YAML, registry_environ

OA, OA2 = "wxa0000000000001", "wxb0000000000002"
OWNER = "seeder"
UNKNOWN = "0" * 24  # shaped like an id, never given out

T = TypeVar("T")


@dataclass(frozen=True)
class Seeded:
    """The database the CLI runs against, and the ids of its four deliveries (oldest first)."""

    url: str
    box: SecretBox
    failed: str  # crm, text to OA, dead-lettered after HTTP 503; its URL has a query
    delivered: str  # ops, the same message
    retrying: str  # crm, subscribe event to OA2, one timeout so far
    fresh: str  # ops, text to OA2, not attempted yet

    def query(self, work: Callable[[Store], Awaitable[T]]) -> T:
        """Run ``work`` on a store of this database."""

        async def run() -> T:
            engine = create_engine(self.url)
            try:
                return await work(Store(engine, self.box))
            finally:
                await engine.dispose()

        return asyncio.run(run())

    def get(self, delivery_id: str) -> DeliveryRecord:
        async def get(store: Store) -> DeliveryRecord | None:
            return await store.deliveries.get(delivery_id)

        record = self.query(get)
        assert record is not None
        return record

    def audit(self, action: str) -> list[AuditRecord]:
        async def page(store: Store) -> list[AuditRecord]:
            pairs, _ = await store.audit.page(before_id=None, limit=100, action=action)
            return [record for _, record in pairs]

        return self.query(page)


def _message(now: float, appid: str, dedup: str, msg_type: str, event: str | None = None) -> NewMessage:
    fields = {"ToUserName": "gh_0000000000001", "FromUserName": "o_user_1", "MsgType": msg_type}
    return NewMessage(
        id=new_record_id(now),
        platform_id="retail",
        authorizer_appid=appid,
        dedup_key=dedup,
        msg_type=msg_type,
        event=event,
        received_at=now,
        disposition="forwarded",
        message=json.dumps(fields | ({"Event": event} if event else {})).encode(),
    )


async def _seed(store: Store, now: float) -> tuple[str, str, str, str]:
    failed = NewDelivery(new_record_id(now), "crm", "https://crm.test/inbox?token=abc")
    delivered = NewDelivery(new_record_id(now + 0.5), "ops", "https://ops.test/hook")  # ids order by time
    retrying = NewDelivery(new_record_id(now + 1), "crm", "https://crm.test/inbox?token=abc")
    fresh = NewDelivery(new_record_id(now + 2), "ops", "https://ops.test/hook")
    give_up_at = now + 86400
    deliveries = store.deliveries
    assert await deliveries.record(
        _message(now, OA, "m1", "text"), [failed, delivered], give_up_at=give_up_at
    )
    assert await deliveries.record(
        _message(now + 1, OA2, "m2", "event", "subscribe"), [retrying], give_up_at=give_up_at
    )
    claimed = await deliveries.claim(OWNER, 60, {}, default_room=10, limit=10)
    assert {d.id for d in claimed} == {failed.id, delivered.id, retrying.id}
    assert await deliveries.dead_letter(failed.id, OWNER, 503, "HTTP 503")
    assert await deliveries.delivered(delivered.id, OWNER, 200)
    assert await deliveries.retry_at(retrying.id, OWNER, now + 3600, None, "no answer within 10 s")
    assert await deliveries.record(_message(now + 2, OA2, "m3", "text"), [fresh], give_up_at=give_up_at)
    return failed.id, delivered.id, retrying.id, fresh.id


@pytest.fixture
def seeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Seeded:
    """The environment of a gateway on a SQLite file (registry, secret key), holding four deliveries:
    one failed, one delivered, two pending."""
    for name in list(os.environ):
        if name.startswith("GATEWAY_") and name != "GATEWAY_TEST_POSTGRES":
            monkeypatch.delenv(name)
    registry = tmp_path / "registry.yaml"
    registry.write_text(REGISTRY_YAML)
    key = base64.b64encode(os.urandom(32)).decode()
    url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    for name, value in registry_environ().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("GATEWAY_CONFIG", str(registry))
    monkeypatch.setenv("GATEWAY_DATABASE_URL", url)
    monkeypatch.setenv("GATEWAY_SECRET_KEY", key)
    box = SecretBox.from_base64(key)

    async def seed() -> tuple[str, str, str, str]:
        engine = create_engine(url)
        try:
            await upgrade(engine)
            return await _seed(Store(engine, box), 1_700_000_000.0)
        finally:
            await engine.dispose()

    return Seeded(url, box, *asyncio.run(seed()))


def gateway(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``gateway ARGS`` in this process: exit status, stdout, stderr."""
    capsys.readouterr()
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def rows(stdout: str) -> dict[str, list[str]]:
    """The table's rows by delivery id, each split on runs of two or more spaces."""
    lines = stdout.splitlines()
    assert lines[0].split() == [
        "id",
        "status",
        "client",
        "url",
        "authorizer",
        "type",
        "attempts",
        "created",
        "(UTC)",
        "last",
        "error",
    ]
    table = {}
    for line in lines[1:]:
        if not re.match(r"[0-9a-f]{24}  ", line):
            break
        cells = re.split(r"\s{2,}", line)
        table[cells[0]] = cells
    return table


def test_list_prints_every_delivery_newest_first(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = gateway(capsys, "deliveries", "list")

    assert status == 0, err
    table = rows(out)
    assert list(table) == [seeded.fresh, seeded.retrying, seeded.delivered, seeded.failed]
    assert table[seeded.failed] == [
        seeded.failed,
        "failed",
        "crm",
        "https://crm.test/inbox",  # never the query, which may carry a credential
        OA,
        "text",
        "1",
        "2023-11-14 22:13:20",
        "HTTP 503",
    ]
    assert table[seeded.delivered][1:3] == ["delivered", "ops"] and table[seeded.delivered][-1] == "-"
    assert table[seeded.retrying][1:] == [
        "pending",
        "crm",
        "https://crm.test/inbox",
        OA2,
        "event.subscribe",
        "1",
        "2023-11-14 22:13:21",
        "no answer within 10 s",
    ]
    assert table[seeded.fresh][1:2] + table[seeded.fresh][-3:] == ["pending", "0", "2023-11-14 22:13:22", "-"]
    assert "token=abc" not in out


def test_list_filters_and_pages(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = gateway(capsys, "deliveries", "list", "--status", "failed")
    assert list(rows(out)) == [seeded.failed]
    _, out, _ = gateway(capsys, "deliveries", "list", "--status", "pending", "--client", "crm")
    assert list(rows(out)) == [seeded.retrying]
    _, out, _ = gateway(capsys, "deliveries", "list", "--client", "nobody")
    assert out == "no deliveries\n"

    status, out, err = gateway(capsys, "deliveries", "list", "--limit", "2")
    assert status == 0 and list(rows(out)) == [seeded.fresh, seeded.retrying]
    assert f"more follow: add --before {seeded.retrying}" in err
    _, out, err = gateway(capsys, "deliveries", "list", "--before", seeded.retrying)
    assert list(rows(out)) == [seeded.delivered, seeded.failed] and "more follow" not in err


def test_list_json_is_the_api_page(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = gateway(capsys, "deliveries", "list", "--json", "--client", "ops", "--limit", "1")

    assert status == 0
    page = json.loads(out)
    assert page["next_cursor"] == seeded.fresh
    (item,) = page["items"]
    assert item == {
        "id": seeded.fresh,
        "message_id": item["message_id"],
        "platform": "retail",
        "authorizer_appid": OA2,
        "msg_type": "text",
        "event": None,
        "client": "ops",
        "url": "https://ops.test/hook",
        "reply": False,
        "status": "pending",
        "attempts": 0,
        "created_at": 1_700_000_002.0,
        "next_attempt_at": 1_700_000_002.0,
        "delivered_at": None,
        "last_status": None,
        "last_error": None,
    }
    _, out, _ = gateway(capsys, "deliveries", "list", "--json", "--status", "delivered")
    assert [i["id"] for i in json.loads(out)["items"]] == [seeded.delivered]
    assert json.loads(out)["next_cursor"] is None


def test_list_refuses_bad_arguments(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["--status", "lost"], ["--limit", "0"], ["--before", "not-an-id"]):
        with pytest.raises(SystemExit) as exited:
            main(["deliveries", "list", *args])
        assert exited.value.code == 2
    assert "invalid choice: 'lost'" in capsys.readouterr().err


def test_replay_makes_deliveries_due_now_and_audits_them(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = gateway(capsys, "deliveries", "replay", seeded.failed, seeded.delivered)

    assert status == 0, err
    assert set(rows(out)) == {seeded.failed, seeded.delivered}
    assert all(row[1] == "pending" for row in rows(out).values())
    assert out.splitlines()[-1].startswith("2 replayed: due now")
    for delivery_id in (seeded.failed, seeded.delivered):
        record = seeded.get(delivery_id)
        assert (record.status, record.delivered_at) == ("pending", None)
        assert record.next_attempt_at is not None and record.next_attempt_at > 1_700_000_000
    audit = seeded.audit("delivery_replayed")
    assert sorted((a.actor, a.authorizer_appid, a.detail) for a in audit) == sorted(
        [("cli", OA, f"{seeded.failed} to crm"), ("cli", OA, f"{seeded.delivered} to ops")]
    )


def test_replay_names_unknown_ids_and_still_replays_the_others(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = gateway(capsys, "deliveries", "replay", UNKNOWN, seeded.failed, "nonsense")

    assert status == 1
    assert f"gateway: no delivery '{UNKNOWN}'" in err and "gateway: no delivery 'nonsense'" in err
    assert list(rows(out)) == [seeded.failed]
    assert seeded.get(seeded.failed).status == "pending"
    assert [a.detail for a in seeded.audit("delivery_replayed")] == [f"{seeded.failed} to crm"]


def test_replay_json_lists_the_replayed_as_the_api_items(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = gateway(capsys, "deliveries", "replay", "--json", seeded.failed, UNKNOWN)

    assert status == 1
    (item,) = json.loads(out)  # stdout holds the document alone; the rest is on stderr
    assert item["id"] == seeded.failed and item["status"] == "pending" and item["client"] == "crm"
    assert list(item) == list(DeliveryRecord.__struct_fields__)  # the keys of GET /v1/deliveries' items
    assert "?" not in item["url"]  # the query of the subscriber's URL may hold a credential
    assert "1 replayed: due now" in err and f"no delivery '{UNKNOWN}'" in err

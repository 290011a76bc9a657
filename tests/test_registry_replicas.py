"""A registry edit reaching every replica: each replica watches its own copy of the file
(``GATEWAY_REGISTRY_WATCH_S``) and reloads when its bytes change, or one replica is asked to reload by
``POST /v1/admin/registry/reload``; every reload, swapped in or refused, is counted, shown by hash in
``/metrics`` and written to the audit trail; a refused file leaves the running registry in force.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from litestar import Litestar
from litestar.testing import AsyncTestClient

from gateway.container import Services
from gateway.crypto import SecretBox
from gateway.http.app import create_app
from gateway.registry.model import load_registry_digest
from gateway.store.audit import AuditRecord
from tests.conftest import CLIENT_KEYS, REGISTRY_YAML, make_settings
from tests.test_reload import environ

__all__ = ["environ"]  # the fixture, shared with the reload tests

WATCH_S = 0.05


def document(**changes: Any) -> str:
    doc: dict[str, Any] = yaml.safe_load(REGISTRY_YAML)
    return yaml.safe_dump(doc | changes)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Replica:
    """One `gateway serve` of a fleet: its own registry file, the shared database."""

    def __init__(self, app: Litestar, client: AsyncTestClient[Litestar], path: Path) -> None:
        self.app, self.client, self.path = app, client, path

    @property
    def services(self) -> Services:
        services: Services = self.app.state["services"]
        return services

    async def metrics(self) -> str:
        return (await self.client.get("/metrics")).text

    async def audit(self) -> list[AuditRecord]:
        await self.services.audit.flush()
        return [r for r in await self.services.store.audit.recent() if r.action.startswith("registry.")]


@pytest.fixture
async def fleet(
    environ: None, sqlite_url: str, secret_box: SecretBox, tmp_path: Path
) -> AsyncIterator[list[Replica]]:
    """Two replicas on one database, each watching its own copy of the registry file."""
    settings = make_settings(sqlite_url, secret_box)
    replicas = []
    clients = []
    for name in ("a", "b"):
        path = tmp_path / name / "registry.yaml"
        path.parent.mkdir()
        path.write_text(document())
        registry, digest = load_registry_digest(path)
        replica_settings = msgspec.structs.replace(settings, config_path=str(path), registry_watch_s=WATCH_S)
        app = create_app(replica_settings, registry, background=False, registry_sha256=digest)
        client: AsyncTestClient[Litestar] = AsyncTestClient(app=app)
        await client.__aenter__()
        clients.append(client)
        replicas.append(Replica(app, client, path))
    try:
        yield replicas
    finally:
        for client in clients:
            await client.__aexit__(None, None, None)


async def eventually(check: Any, what: str) -> None:
    for _ in range(100):
        if await check():
            return
        await asyncio.sleep(WATCH_S)
    raise AssertionError(f"timed out waiting for {what}")


async def test_an_edit_of_the_file_reaches_every_replica(fleet: list[Replica]) -> None:
    before = sha256(document())
    for replica in fleet:
        assert f'gateway_registry_info{{sha256="{before}"}} 1.0' in await replica.metrics()
    edited = document(wechat={"api_base": "https://dr.example.com"})
    for replica in fleet:
        replica.path.write_text(edited)

    for replica in fleet:

        async def swapped(replica: Replica = replica) -> bool:
            return replica.services.registry.current.wechat.api_base == "https://dr.example.com"

        await eventually(swapped, "the watch to reload")
        metrics = await replica.metrics()
        assert f'gateway_registry_info{{sha256="{sha256(edited)}"}} 1.0' in metrics
        assert before not in metrics  # one registry in force, one series
        assert 'gateway_registry_reloads_total{outcome="ok"} 1.0' in metrics
        assert replica.services.registry.sha256 == sha256(edited)
    (record,) = [r for r in await fleet[0].audit() if r.action == "registry.reloaded"]
    assert (record.actor, record.action) == ("gateway", "registry.reloaded")
    assert record.detail is not None
    assert record.detail.startswith(f"sha256={sha256(edited)} source=watch: ")
    assert "wechat.api_base changed" in record.detail


async def test_a_bad_edit_is_refused_once_and_the_old_registry_keeps_serving(fleet: list[Replica]) -> None:
    replica = fleet[0]
    running = replica.services.registry.current
    bad = document(clients=[{"id": "crm", "key_sha256": "short", "scopes": ["token"]}])
    # Moved in whole, as a ConfigMap swaps its files: written in place, the watch may read it half
    # written, refuse that, then refuse the whole file too (another sha-256): two refusals.
    partial = replica.path.with_suffix(".new")
    partial.write_text(bad)
    partial.replace(replica.path)

    async def refused() -> bool:
        return 'gateway_registry_reloads_total{outcome="refused"} 1.0' in await replica.metrics()

    await eventually(refused, "the refusal")
    await asyncio.sleep(WATCH_S * 5)  # the same bad file is not tried again at every look
    metrics = await replica.metrics()
    assert 'gateway_registry_reloads_total{outcome="refused"} 1.0' in metrics
    assert f'gateway_registry_info{{sha256="{sha256(document())}"}} 1.0' in metrics
    assert replica.services.registry.current is running
    ok = await replica.client.get("/v1/audit-log", headers={"Authorization": f"Bearer {CLIENT_KEYS['ops']}"})
    assert ok.status_code == 200  # the old registry's clients still get in
    (record,) = await replica.audit()
    assert record.action == "registry.reload_refused"
    assert record.detail is not None
    assert record.detail.startswith(f"sha256={sha256(bad)} source=watch: ")
    assert "clients[0].key_sha256" in record.detail


async def test_an_administrator_reloads_a_replica_by_the_endpoint(fleet: list[Replica]) -> None:
    replica = fleet[0]
    admin = {"Authorization": f"Bearer {CLIENT_KEYS['ops']}"}
    edited = document(wechat={"api_base": "https://dr.example.com"})
    # Written aside and moved in, as a ConfigMap swaps its files: the watch may see it too, after.
    partial = replica.path.with_suffix(".new")
    partial.write_text(edited)
    partial.replace(replica.path)

    refused = await replica.client.post(
        "/v1/admin/registry/reload", headers={"Authorization": f"Bearer {CLIENT_KEYS['crm']}"}
    )
    assert refused.status_code == 403
    answer = await replica.client.post("/v1/admin/registry/reload", headers=admin)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["sha256"] == sha256(edited)
    assert replica.services.registry.sha256 == sha256(edited)
    assert replica.services.registry.current.wechat.api_base == "https://dr.example.com"

    replica.path.write_text("platforms: [")
    bad = await replica.client.post("/v1/admin/registry/reload", headers=admin)
    assert bad.status_code == 409
    error = bad.json()["error"]
    assert error["code"] == "registry_refused"
    assert "not valid YAML" in error["message"]
    assert replica.services.registry.current.wechat.api_base == "https://dr.example.com"
    records = [r for r in await replica.audit() if "source=endpoint" in (r.detail or "")]
    assert [(r.actor, r.action) for r in sorted(records, key=lambda r: r.at)] == [
        ("ops", "registry.reloaded"),
        ("ops", "registry.reload_refused"),
    ]

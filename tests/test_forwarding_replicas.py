"""Forwarding across real processes: two ``gateway serve`` replicas on one PostgreSQL database, WeChat played
by ``gateway simulate`` (its message pushes land on the first replica), subscribers on loopback sockets.

A replica killed (SIGKILL) right after it answered WeChat loses nothing: the other replica delivers once
the dead one's lease lapses. ``SIGHUP`` swaps in the subscriptions of a rewritten registry, and a
registry that does not validate is refused with its precise message while the running ones stay.
"""

from __future__ import annotations

import functools
import signal
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import POSTGRES_SERVER
from tests.support.flows import approve_authorization, push_ticket
from tests.support.subscriber import Subscriber, served_subscriber
from tests.test_e2e import EXAMPLE, Process, free_port, wait_for
from tests.test_replicas import _environment, _run, _sql

OA = "wxa0000000000001"
RETAIL = "wxc0mp000000001"
CRM_HOOK = "crm-hook-secret-2026"
OPS_HOOK = "ops-hook-secret-2026"
ADMIN = {"Authorization": "Bearer demo-ops-key"}
TIMEOUT_S = 2  # GATEWAY_DELIVERY_TIMEOUT_S: a dead replica's delivery is taken over 5 s after it


@dataclass
class Cluster:
    simulator_url: str
    urls: list[str]
    replicas: list[Process]
    registry: Path
    crm: tuple[Subscriber, str]
    ops: tuple[Subscriber, str]

    def relay(self, content: str) -> dict[str, Any]:
        """A follower writes to OA; WeChat relays it to retail's message URL on the first replica."""
        response = httpx.post(
            f"{self.simulator_url}/sim/components/{RETAIL}/messages",
            json={"authorizer_appid": OA, "fields": {"MsgType": "text", "Content": content}},
            timeout=30,
        )
        response.raise_for_status()
        relayed: dict[str, Any] = response.json()
        return relayed

    def write_registry(self, subscriptions: list[dict[str, Any]]) -> None:
        self.registry.write_text(self._base + yaml.safe_dump({"subscriptions": subscriptions}))

    _base: str = ""


def _subscription(client: str, url: str, secret_var: str) -> dict[str, Any]:
    return {"client": client, "url": f"{url}/{client}", "secret": f"${{{secret_var}}}"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("forwarding")
    name = f"gateway_forwarding_{uuid.uuid4().hex[:12]}"
    server_dsn = POSTGRES_SERVER.replace("postgresql+asyncpg://", "postgresql://")
    _run(_sql(f"{server_dsn}/postgres", f'CREATE DATABASE "{name}"'))
    processes: list[Process] = []
    with ExitStack() as stack:
        try:
            crm = stack.enter_context(served_subscriber(CRM_HOOK))
            ops = stack.enter_context(served_subscriber(OPS_HOOK))
            env = _environment(f"{POSTGRES_SERVER}/{name}") | {
                "CRM_HOOK_SECRET": CRM_HOOK,
                "OPS_HOOK_SECRET": OPS_HOOK,
                "GATEWAY_DELIVERY_TIMEOUT_S": str(TIMEOUT_S),
            }
            urls = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
            simulator_url = f"http://127.0.0.1:{free_port()}"
            registry = tmp / "registry.yaml"
            cluster = Cluster(simulator_url, urls, [], registry, crm, ops)
            cluster._base = EXAMPLE.read_text().replace("http://127.0.0.1:8001", simulator_url) + "\n"
            cluster.write_registry([_subscription("crm", crm[1], "CRM_HOOK_SECRET")])
            for i, url in enumerate(urls):
                serve = ["serve", "--config", str(registry), "--port", url.rsplit(":", 1)[1]]
                processes.append(Process(serve, env, tmp / f"replica-{i + 1}.log"))
            cluster.replicas = processes[:2]
            simulate = ["simulate", "--config", str(registry), "--gateway-url", urls[0]]
            simulate += ["--port", simulator_url.rsplit(":", 1)[1], "--ticket-interval", "0"]
            processes.append(Process(simulate, env, tmp / "simulator.log"))
            for url in urls:
                wait_for(lambda url=url: httpx.get(f"{url}/healthz", timeout=5).is_success, what=url)
            wait_for(
                lambda: httpx.get(f"{simulator_url}/sim/counters", timeout=5).is_success, what="simulator"
            )
            _run(_authorize(simulator_url, env["RETAIL_APPSECRET"]))
            wait_for(functools.partial(_authorized, urls[1]), timeout=20, what="the authorization")
            yield cluster
        finally:
            for process in processes:
                process.stop(signal.SIGKILL)
            _run(_sql(f"{server_dsn}/postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _authorize(simulator_url: str, secret: str) -> None:
    async with httpx.AsyncClient(base_url=simulator_url, timeout=30) as sim:
        assert (await push_ticket(sim, RETAIL))["body"] == "success"
        approval = await approve_authorization(sim, RETAIL, secret, OA, [1, 2])
        assert approval["push"]["body"] == "success", approval


def _authorized(url: str) -> bool:
    headers = {"Authorization": "Bearer demo-crm-key"}
    return httpx.get(f"{url}/v1/authorizers/{OA}/access-token", headers=headers, timeout=10).is_success


def _deliveries(url: str, **params: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/v1/deliveries", params=params, headers=ADMIN, timeout=10)
    response.raise_for_status()
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def _received(subscriber: Subscriber, content: str) -> list[Any]:
    return [d for d in subscriber.received if d.payload and d.payload["message"].get("Content") == content]


def test_sighup_swaps_subscriptions_and_refuses_a_bad_registry(cluster: Cluster) -> None:
    crm, crm_url = cluster.crm
    ops, ops_url = cluster.ops
    marks = [len(r.output()) for r in cluster.replicas]
    cluster.write_registry(
        [_subscription("crm", crm_url, "CRM_HOOK_SECRET"), _subscription("ops", ops_url, "OPS_HOOK_SECRET")]
    )
    for replica in cluster.replicas:
        replica.proc.send_signal(signal.SIGHUP)
    for replica, mark in zip(cluster.replicas, marks, strict=True):
        wait_for(lambda r=replica, m=mark: "2 subscription(s) in force" in r.output()[m:], what="the reload")

    assert cluster.relay("after the reload")["body"] == "success"
    wait_for(lambda: _received(crm, "after the reload") and _received(ops, "after the reload"), what="both")

    marks = [len(r.output()) for r in cluster.replicas]
    cluster.write_registry([_subscription("nobody", ops_url, "OPS_HOOK_SECRET")])
    for replica in cluster.replicas:
        replica.proc.send_signal(signal.SIGHUP)
    for replica, mark in zip(cluster.replicas, marks, strict=True):
        wait_for(lambda r=replica, m=mark: "reload refused" in r.output()[m:], what="the refusal")
        logged = replica.output()[mark:]
        assert f"{cluster.registry}: subscriptions[0].client: unknown client 'nobody'" in logged
        assert OPS_HOOK not in logged and CRM_HOOK not in logged

    assert cluster.relay("after the refusal")["body"] == "success"
    wait_for(lambda: _received(crm, "after the refusal") and _received(ops, "after the refusal"), what="both")
    assert all(d.signature_ok for d in crm.received + ops.received)


def test_a_replica_killed_right_after_answering_wechat_loses_nothing(cluster: Cluster) -> None:
    crm, crm_url = cluster.crm
    mark = len(cluster.replicas[1].output())
    cluster.write_registry([_subscription("crm", crm_url, "CRM_HOOK_SECRET")])
    cluster.replicas[1].proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "1 subscription(s) in force" in cluster.replicas[1].output()[mark:], what="the reload")
    crm.delay_s = 3 * TIMEOUT_S  # an attempt by the first replica hangs past its timeout…

    relayed = cluster.relay("kill -9")
    assert relayed["body"] == "success"
    wait_for(lambda: _received(crm, "kill -9"), what="the first attempt")
    cluster.replicas[0].proc.kill()  # …and the replica that answered WeChat dies in the middle of it
    cluster.replicas[0].proc.wait(10)
    crm.delay_s = 0.0

    def delivered() -> bool:
        ids = {d.delivery_id for d in _received(crm, "kill -9")}
        return any(d["id"] in ids for d in _deliveries(cluster.urls[1], client="crm", status="delivered"))

    # within the dead replica's lease (timeout + 5 s), a poll, and one retry's wait
    wait_for(delivered, timeout=TIMEOUT_S + 5 + 5, what="the delivery by the surviving replica")
    arrivals = _received(crm, "kill -9")
    assert len(arrivals) >= 2 and len({d.delivery_id for d in arrivals}) == 1  # the same delivery again
    assert all(d.signature_ok for d in arrivals)

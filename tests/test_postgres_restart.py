"""A PostgreSQL restart under a running ``gateway serve``: delayed, nothing lost.

The database is a private server (``tests.support.private_postgres``) so that stopping it disturbs no
other test. WeChat is ``gateway simulate``; a subscriber listens on a loopback socket.

- Tokens: while the database is down, callers keep getting the token the gateway holds in memory or a
  clear 503; once it is back, the same stored token is served again within seconds, and WeChat saw no
  extra renewal (no token, ticket or refresh token lost or minted twice).
- Messages accepted before the restart reach their subscriber afterwards: a delivery whose outcome could
  not be written is attempted again (at least once), and every one ends delivered.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.private_postgres import PrivatePostgres, postgres_binaries, private_postgres
from tests.support.subscriber import Subscriber, served_subscriber
from tests.test_e2e import EXAMPLE, Process, free_port, wait_for
from tests.test_forwarding_replicas import OA, RETAIL, _authorize, _authorized
from tests.test_replicas import _environment, _run

pytestmark = pytest.mark.skipif(postgres_binaries() is None, reason="needs PostgreSQL's server binaries")

HOOK = "restart-hook-secret"
ADMIN = {"Authorization": "Bearer demo-ops-key"}
CRM = {"Authorization": "Bearer demo-crm-key"}
DOWN_S = 3.0


@dataclass
class Deployment:
    database: PrivatePostgres
    gateway: Process
    url: str
    simulator_url: str
    subscriber: Subscriber


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp: Path = tmp_path_factory.mktemp("restart")
    with private_postgres() as database, served_subscriber(HOOK) as (subscriber, hook_url):
        env = _environment(database.url) | {"HOOK_SECRET": HOOK, "GATEWAY_DELIVERY_TIMEOUT_S": "2"}
        url = f"http://127.0.0.1:{free_port()}"
        simulator_url = f"http://127.0.0.1:{free_port()}"
        registry = tmp / "registry.yaml"
        subscriptions = [{"client": "crm", "url": f"{hook_url}/inbox", "secret": "${HOOK_SECRET}"}]
        registry.write_text(
            EXAMPLE.read_text().replace("http://127.0.0.1:8001", simulator_url)
            + "\n"
            + yaml.safe_dump({"subscriptions": subscriptions})
        )
        gateway = Process(
            ["serve", "--config", str(registry), "--port", url.rsplit(":", 1)[1]], env, tmp / "gw.log"
        )
        simulate = ["simulate", "--config", str(registry), "--gateway-url", url]
        simulate += ["--port", simulator_url.rsplit(":", 1)[1], "--ticket-interval", "0"]
        simulator = Process(simulate, env, tmp / "sim.log")
        try:
            wait_for(lambda: httpx.get(f"{url}/healthz", timeout=5).is_success, what="the gateway")
            wait_for(
                lambda: httpx.get(f"{simulator_url}/sim/counters", timeout=5).is_success, what="the simulator"
            )
            _run(_authorize(simulator_url, env["RETAIL_APPSECRET"]))
            wait_for(lambda: _authorized(url), timeout=20, what="the authorization")
            yield Deployment(database, gateway, url, simulator_url, subscriber)
        finally:
            simulator.stop(signal.SIGKILL)
            gateway.stop(signal.SIGKILL)


def _token(url: str) -> httpx.Response:
    return httpx.get(f"{url}/v1/authorizers/{OA}/access-token", headers=CRM, timeout=10)


def _counters(simulator_url: str) -> dict[str, Any]:
    counters: dict[str, Any] = httpx.get(f"{simulator_url}/sim/counters", timeout=5).json()
    return counters


def test_tokens_survive_a_database_restart_without_renewals(deployment: Deployment) -> None:
    before = _token(deployment.url)
    assert before.status_code == 200
    renewals = _counters(deployment.simulator_url).get("api_authorizer_token", {"total": 0})["total"]
    statuses: list[int] = []
    stop = threading.Event()

    def callers() -> None:
        while not stop.is_set():
            try:
                statuses.append(_token(deployment.url).status_code)
            except httpx.HTTPError:
                statuses.append(0)
            time.sleep(0.02)

    thread = threading.Thread(target=callers)
    thread.start()
    try:
        time.sleep(0.5)
        deployment.database.stop()
        down = httpx.get(f"{deployment.url}/v1/deliveries", headers=ADMIN, timeout=10)  # needs the store
        assert (down.status_code, down.json()["error"]["code"]) == (503, "store_unavailable")
        assert down.headers["retry-after"] == "1"
        time.sleep(DOWN_S)
        deployment.database.start()
        back = time.monotonic()
        wait_for(
            lambda: _token(deployment.url).status_code == 200, timeout=15, what="tokens after the restart"
        )
        recovered_in = time.monotonic() - back
    finally:
        stop.set()
        thread.join()

    assert deployment.gateway.proc.poll() is None  # the process lived through it
    # a token still good at WeChat is served from memory while the store is away
    assert set(statuses) == {200}, statuses
    after = _token(deployment.url)
    assert after.json()["access_token"] == before.json()["access_token"]  # the stored token, not a new one
    assert _counters(deployment.simulator_url).get("api_authorizer_token", {"total": 0})["total"] == renewals
    assert recovered_in < 10
    assert httpx.get(f"{deployment.url}/readyz", timeout=5).status_code == 200


def test_messages_accepted_before_a_restart_are_delivered_after_it(deployment: Deployment) -> None:
    subscriber = deployment.subscriber
    subscriber.status = 503  # the subscriber refuses at first: deliveries stay pending
    contents = [f"before the restart {n}" for n in range(5)]
    for content in contents:
        relayed = httpx.post(
            f"{deployment.simulator_url}/sim/components/{RETAIL}/messages",
            json={"authorizer_appid": OA, "fields": {"MsgType": "text", "Content": content}},
            timeout=30,
        ).json()
        assert relayed["body"] == "success", relayed

    def received(content: str) -> list[Any]:
        return [d for d in subscriber.received if d.payload and d.payload["message"]["Content"] == content]

    wait_for(lambda: all(received(c) for c in contents), what="first attempts")
    deployment.database.stop()
    subscriber.status = 200  # answers now, but the gateway cannot write the outcome
    time.sleep(DOWN_S)
    deployment.database.start()

    def all_delivered() -> bool:
        page = httpx.get(
            f"{deployment.url}/v1/deliveries",
            params={"client": "crm", "limit": 50},
            headers=ADMIN,
            timeout=10,
        ).json()
        mine = [d for d in page["items"] if d["msg_type"] == "text"]
        return len(mine) >= len(contents) and all(d["status"] == "delivered" for d in mine)

    wait_for(all_delivered, timeout=30, what="every delivery after the restart")
    for content in contents:
        taken = [d for d in received(content) if 200 <= d.status < 300]
        assert taken and all(d.signature_ok for d in taken)
        assert len({d.delivery_id for d in received(content)}) == 1  # one delivery, however many attempts

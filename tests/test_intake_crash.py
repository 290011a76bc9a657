"""``kill -9`` of the replica that just answered WeChat's push: nothing is lost.

Two ``gateway serve`` replicas share one PostgreSQL database; WeChat (``gateway simulate``) pushes to the
first. It is killed right after it answered a verify-ticket push and then the ``authorized`` push of an
approval. What it answered ``success`` to was stored first, so the second replica serves the component
token from that ticket and stores the authorization from that event (another replica acts on events a
dead one left), and the account's token comes from the survivor.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import POSTGRES_SERVER
from tests.support.flows import approve_authorization, push_ticket
from tests.support.servers import free_port
from tests.test_e2e import EXAMPLE, Process, wait_for
from tests.test_forwarding_replicas import OA, RETAIL, _authorized
from tests.test_replicas import _environment, _run, _sql


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[list[Process], list[str], str, dict[str, str]]]:
    name = f"gateway_crash_{uuid.uuid4().hex[:12]}"
    server_dsn = POSTGRES_SERVER.replace("postgresql+asyncpg://", "postgresql://")
    _run(_sql(f"{server_dsn}/postgres", f'CREATE DATABASE "{name}"'))
    processes: list[Process] = []
    try:
        env = _environment(f"{POSTGRES_SERVER}/{name}")
        urls = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
        simulator_url = f"http://127.0.0.1:{free_port()}"
        registry = tmp_path / "registry.yaml"
        registry.write_text(EXAMPLE.read_text().replace("http://127.0.0.1:8001", simulator_url))
        for i, url in enumerate(urls):
            serve = ["serve", "--config", str(registry), "--port", url.rsplit(":", 1)[1]]
            processes.append(Process(serve, env, tmp_path / f"replica-{i + 1}.log"))
        simulate = ["simulate", "--config", str(registry), "--gateway-url", urls[0], "--ticket-interval", "0"]
        processes.append(
            Process([*simulate, "--port", simulator_url.rsplit(":", 1)[1]], env, tmp_path / "sim.log")
        )
        for url in urls:
            wait_for(lambda url=url: httpx.get(f"{url}/healthz", timeout=5).is_success, what=url)
        wait_for(lambda: httpx.get(f"{simulator_url}/sim/counters", timeout=5).is_success, what="simulator")
        yield processes[:2], urls, simulator_url, env
    finally:
        for process in processes:
            process.stop(signal.SIGKILL)
        _run(_sql(f"{server_dsn}/postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_a_replica_killed_after_answering_pushes_loses_neither_ticket_nor_authorization(
    replicas: tuple[list[Process], list[str], str, dict[str, str]],
) -> None:
    processes, urls, simulator_url, env = replicas

    async def ticket_then_approval() -> None:
        async with httpx.AsyncClient(base_url=simulator_url, timeout=30) as sim:
            assert (await push_ticket(sim, RETAIL))["body"] == "success"
            approval = await approve_authorization(sim, RETAIL, env["RETAIL_APPSECRET"], OA, [1, 2])
            assert approval["push"]["body"] == "success", approval
        processes[0].proc.kill()  # at once: the first replica may not have acted on the event yet

    _run(ticket_then_approval())
    processes[0].proc.wait(10)

    # The survivor takes the event left behind (its worker polls) and serves the account's token.
    wait_for(lambda: _authorized(urls[1]), timeout=30, what="the authorization on the surviving replica")
    ready = httpx.get(f"{urls[1]}/readyz", timeout=5)
    assert ready.status_code == 200, ready.text  # the ticket the dead replica stored is there

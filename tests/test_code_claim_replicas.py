"""One authorization code, two replicas: the redirect on one and WeChat's ``authorized`` push on the other.

Two real ``gateway serve`` processes share one PostgreSQL database; a ``gateway simulate`` process plays
WeChat. The administrator's browser lands on one replica at the moment WeChat pushes the same code to the
other (the simulator holds the push back until the test releases it), and WeChat sits a second on
api_query_auth, so both arrivals would be waiting on it together. The code is claimed in the database
before its exchange: the simulator counts one api_query_auth, both arrivals succeed, and the
authorization is stored (and audited) once (SPEC §7; protocol §10).
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from tests.conftest import POSTGRES_SERVER
from tests.test_e2e import EXAMPLE, Process, free_port, wait_for
from tests.test_replicas import _environment, _run, _sql

RETAIL = "wxc0mp000000001"  # the example registry's first component


class Pair(msgspec.Struct):
    simulator_url: str
    urls: list[str]
    replicas: list[Process]
    dsn: str
    env: dict[str, str]

    def tails(self, chars: int = 3000) -> str:
        return "\n".join(f"--- replica {i} ---\n{r.output()[-chars:]}" for i, r in enumerate(self.replicas))


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tmp: Path = tmp_path_factory.mktemp("code-claims")
    name = f"gateway_codes_{uuid.uuid4().hex[:12]}"
    server_dsn = POSTGRES_SERVER.replace("postgresql+asyncpg://", "postgresql://")
    _run(_sql(f"{server_dsn}/postgres", f'CREATE DATABASE "{name}"'))
    processes: list[Process] = []
    try:
        env = _environment(f"{POSTGRES_SERVER}/{name}")
        ports = [free_port(), free_port()]
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        simulator_url = f"http://127.0.0.1:{free_port()}"
        registry = tmp / "registry.yaml"
        registry.write_text(EXAMPLE.read_text().replace("http://127.0.0.1:8001", simulator_url))
        for i, port in enumerate(ports):
            serve = ["serve", "--config", str(registry), "--port", str(port)]
            processes.append(Process(serve, env, tmp / f"replica-{i}.log"))
        simulate = ["simulate", "--config", str(registry), "--gateway-url", urls[0]]
        simulate += ["--port", simulator_url.rsplit(":", 1)[1], "--ticket-interval", "0"]
        processes.append(Process(simulate, env, tmp / "simulator.log"))
        for url in urls:
            wait_for(lambda url=url: httpx.get(f"{url}/readyz", timeout=5).status_code == 200, what=url)
        wait_for(lambda: httpx.get(f"{simulator_url}/sim/counters", timeout=5).is_success, what="simulator")
        pushed = httpx.post(f"{simulator_url}/sim/components/{RETAIL}/push-ticket", timeout=10).json()
        assert pushed["body"] == "success", pushed
        yield Pair(simulator_url, urls, processes[:2], f"{server_dsn}/{name}", env)
    finally:
        for process in processes:
            process.stop(signal.SIGKILL)
        _run(_sql(f"{server_dsn}/postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _push_to(sim: httpx.AsyncClient, pair: Pair, replica: int) -> None:
    """WeChat's authorization event URL of the retail component points at ``replica``."""
    component = {
        "appid": RETAIL,
        "secret": pair.env["RETAIL_APPSECRET"],
        "token": pair.env["RETAIL_TOKEN"],
        "encoding_aes_key": pair.env["RETAIL_AES_KEY"],
        "event_url": f"{pair.urls[replica]}/wechat/retail/events",
    }
    (await sim.post("/sim/components", json=component)).raise_for_status()


async def _held_approval(sim: httpx.AsyncClient, pair: Pair, appid: str) -> str:
    """An administrator approves; the ``authorized`` push is held back. Returns the authorization code."""
    ticket = (await sim.get(f"/sim/components/{RETAIL}")).json()["latest_ticket"]
    token = (
        await sim.post(
            "/cgi-bin/component/api_component_token",
            json={
                "component_appid": RETAIL,
                "component_appsecret": pair.env["RETAIL_APPSECRET"],
                "component_verify_ticket": ticket,
            },
        )
    ).json()["component_access_token"]
    pre_auth_code = (
        await sim.post(
            "/cgi-bin/component/api_create_preauthcode",
            params={"component_access_token": token},
            json={"component_appid": RETAIL},
        )
    ).json()["pre_auth_code"]
    approval = {
        "authorizer_appid": appid,
        "func_ids": [1, 2, 24],
        "kind": "official_account",
        "nick_name": f"Account {appid}",
        "principal_name": "ACME Group Co., Ltd.",
        "push_now": False,
    }
    response = await sim.post(f"/sim/pre-auth-codes/{pre_auth_code}/approve", json=approval)
    response.raise_for_status()
    code: str = response.json()["auth_code"]
    return code


@pytest.mark.parametrize(
    ("appid", "redirect_to", "push_to"), [("wxa0000000000041", 0, 1), ("wxa0000000000042", 1, 0)]
)
async def test_the_redirect_and_the_push_on_two_replicas_exchange_the_code_once(
    pair: Pair, appid: str, redirect_to: int, push_to: int
) -> None:
    async with (
        httpx.AsyncClient(base_url=pair.simulator_url, timeout=30) as sim,
        httpx.AsyncClient(timeout=30) as browser,
    ):
        await _push_to(sim, pair, push_to)
        code = await _held_approval(sim, pair, appid)
        fault = {"endpoint": "api_query_auth", "delay_s": 1.0, "times": 2}
        (await sim.post("/sim/faults", json=fault)).raise_for_status()
        await sim.post("/sim/counters/reset")

        landing = f"{pair.urls[redirect_to]}/wechat/retail/authorized"
        page, pushed = await asyncio.gather(
            browser.get(landing, params={"auth_code": code, "expires_in": "600"}),
            sim.post(f"/sim/auth-codes/{code}/push"),
        )
        assert page.status_code == 200, f"{page.text}\n{pair.tails()}"
        assert appid in page.text and f"Account {appid}" in page.text
        assert pushed.json()["body"] == "success", pushed.text

        # The push's replica acts on it in the background: it waits for the redirect's outcome, or
        # the other way round; either way it ends as done.
        query = (
            "SELECT outcome FROM component_pushes WHERE authorizer_appid = $1 AND processed_at IS NOT NULL"
        )
        deadline = time.monotonic() + 30
        while not (rows := await _sql(pair.dsn, query, appid)):
            assert time.monotonic() < deadline, f"the push was never acted upon\n{pair.tails()}"
            await asyncio.sleep(0.1)
        assert rows[0]["outcome"] in ("already exchanged", f"{appid} authorized"), rows

        counters = (await sim.get("/sim/counters")).json()
        assert counters["api_query_auth"]["total"] == 1, f"{counters}\n{pair.tails()}"
        [(stored,)] = await _sql(
            pair.dsn, "SELECT count(*) FROM authorizations WHERE authorizer_appid = $1", appid
        )
        assert stored == 1
        [(state,)] = await _sql(
            pair.dsn, "SELECT state FROM authorization_codes WHERE authorizer_appid = $1", appid
        )
        assert state == "exchanged"
        grants = "SELECT count(*) AS n FROM audit_log WHERE authorizer_appid = $1 AND action = $2"
        deadline = time.monotonic() + 10
        while (await _sql(pair.dsn, grants, appid, "authorization.granted"))[0][
            "n"
        ] < 1:  # the audit trail flushes every 0.5 s
            assert time.monotonic() < deadline, pair.tails()
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # the other replica's flush, had it recorded a second grant
        assert (await _sql(pair.dsn, grants, appid, "authorization.granted"))[0]["n"] == 1
        await sim.delete("/sim/faults")

"""SIGTERM on ``gateway serve``: a request in flight finishes, new connections are refused, background work
stops cleanly and leaves no lease behind, and the process exits 0 within the drain."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx

from gateway.http.serving import DRAIN_S
from tests.test_e2e import EXAMPLE, Process, free_port, wait_for
from tests.test_forwarding_replicas import OA, _authorize, _authorized
from tests.test_replicas import _environment, _run

SLOW_S = 2.0  # how long WeChat takes to answer the call in flight


def test_sigterm_lets_the_call_in_flight_finish_and_releases_everything(tmp_path: Path) -> None:
    database = tmp_path / "gateway.db"
    env = _environment(f"sqlite+aiosqlite:///{database}")
    url, simulator_url = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    registry = tmp_path / "registry.yaml"
    registry.write_text(EXAMPLE.read_text().replace("http://127.0.0.1:8001", simulator_url))
    gateway = Process(
        ["serve", "--config", str(registry), "--port", url.rsplit(":", 1)[1]], env, tmp_path / "gw.log"
    )
    simulate = ["simulate", "--config", str(registry), "--gateway-url", url]
    simulator = Process(
        [*simulate, "--port", simulator_url.rsplit(":", 1)[1], "--ticket-interval", "0"],
        env,
        tmp_path / "sim.log",
    )
    try:
        wait_for(lambda: httpx.get(f"{url}/healthz", timeout=5).is_success, what="the gateway")
        wait_for(
            lambda: httpx.get(f"{simulator_url}/sim/counters", timeout=5).is_success, what="the simulator"
        )
        _run(_authorize(simulator_url, env["RETAIL_APPSECRET"]))
        wait_for(lambda: _authorized(url), timeout=20, what="the authorization")
        fault = {"endpoint": "user/get", "delay_s": SLOW_S}
        httpx.post(f"{simulator_url}/sim/faults", json=fault, timeout=5).raise_for_status()

        answers: list[httpx.Response] = []
        headers = {"Authorization": "Bearer demo-crm-key", "X-Authorizer-Appid": OA}
        call = threading.Thread(
            target=lambda: answers.append(
                httpx.get(f"{url}/wx/cgi-bin/user/get", headers=headers, timeout=30)
            )
        )
        call.start()
        time.sleep(0.5)  # the call is waiting on WeChat
        started = time.monotonic()
        gateway.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        try:
            httpx.get(f"{url}/healthz", timeout=2)
            refused = False
        except httpx.HTTPError:
            refused = True
        call.join(30)
        code = gateway.proc.wait(DRAIN_S + 15)
        took = time.monotonic() - started
    finally:
        simulator.stop(signal.SIGKILL)
        gateway.stop(signal.SIGKILL)

    (answer,) = answers
    body = answer.json()
    assert (
        answer.status_code == 200 and body.get("errcode", 0) == 0 and "total" in body
    )  # finished, not cut off
    assert refused  # no new connections once draining
    assert code == 0 and took < DRAIN_S
    log = gateway.output()
    assert "Traceback" not in log and " ERROR " not in log
    with sqlite3.connect(database) as conn:
        held = conn.execute("SELECT count(*) FROM credentials WHERE lease_owner IS NOT NULL").fetchone()[0]
        leased = conn.execute("SELECT count(*) FROM deliveries WHERE lease_owner IS NOT NULL").fetchone()[0]
    assert (held, leased) == (0, 0)

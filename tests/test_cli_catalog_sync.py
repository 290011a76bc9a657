"""``gateway catalog sync [--platform ID] [--concurrency N]``, as a real process."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.registry import parse_registry
from gateway.settings import Settings
from gateway.simulator import SimComponent, SimulatorConfig, create_simulator_app
from tests.conftest import PLATFORM_SECRETS, REGISTRY_YAML, registry_environ
from tests.support.servers import serve_in_thread

RETAIL, FINANCE = PLATFORM_SECRETS["retail"]["appid"], PLATFORM_SECRETS["finance"]["appid"]
GROUP_OPEN = "wx0pen0000000001"
ACCOUNTS = {  # appid -> (kind, {component: func ids})
    "wxa0000000000021": ("official_account", {RETAIL: [1, 24], FINANCE: [1, 2]}),
    "wxa0000000000022": ("official_account", {FINANCE: [1, 3]}),
    "wxa0000000000023": ("mini_program", {RETAIL: [17, 25]}),
    "wxa0000000000024": ("mini_program", {FINANCE: [17]}),
}


class Setup:
    def __init__(self, sim: str, env: dict[str, str]) -> None:
        self.sim = sim
        self.env = env

    def gateway(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    """The simulator and a gateway (which receives the tickets) on one SQLite file; accounts seeded in the
    simulator only, so the gateway learns of them from the sync."""
    simulator = create_simulator_app(
        SimulatorConfig(
            components=[
                SimComponent(v["appid"], v["secret"], v["token"], v["aes_key"])
                for v in PLATFORM_SECRETS.values()
            ],
            push_on_start=False,
            ticket_interval_s=0,
        )
    )
    key = base64.b64encode(os.urandom(32)).decode()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")} | registry_environ()
    env |= {"GATEWAY_SECRET_KEY": key, "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'g.db'}"}
    with serve_in_thread(simulator) as sim:
        config = tmp_path / "registry.yaml"
        config.write_text(REGISTRY_YAML.replace("http://wechat.test", sim))
        env["GATEWAY_CONFIG"] = str(config)
        registry = parse_registry(config.read_text(), source=str(config), environ=env)
        with serve_in_thread(create_app(Settings.from_environ(env), registry)) as gateway:
            for platform, v in PLATFORM_SECRETS.items():
                component = {
                    "appid": v["appid"],
                    "secret": v["secret"],
                    "token": v["token"],
                    "encoding_aes_key": v["aes_key"],
                    "event_url": f"{gateway}/wechat/{platform}/events",
                }
                httpx.post(f"{sim}/sim/components", json=component).raise_for_status()
                pushed = httpx.post(f"{sim}/sim/components/{v['appid']}/push-ticket").json()
                assert pushed["body"] == "success"
            for appid, (kind, components) in ACCOUNTS.items():
                account = {
                    "authorizer_appid": appid,
                    "kind": kind,
                    "nick_name": appid,
                    "principal_name": "ACME",
                    "components": components,
                }
                httpx.post(f"{sim}/sim/authorizers", json=account).raise_for_status()
            group = {
                "open_appid": GROUP_OPEN,
                "principal_name": "ACME",
                "verified": True,
                "members": ["wxa0000000000021"],
            }
            httpx.post(f"{sim}/sim/open-accounts", json=group).raise_for_status()
            yield Setup(sim, env)


def table(stdout: str) -> dict[str, str]:
    """The summary table: label -> value."""
    rows = {}
    for line in stdout.splitlines():
        if not line.strip() or line.startswith("problems:"):
            break
        label, _, value = line.rpartition(" ")
        rows[label.strip()] = value
    return rows


def test_sync_prints_a_summary_and_exits_0_then_1_when_something_failed(setup: Setup) -> None:
    synced = setup.gateway("catalog", "sync", "--concurrency", "2")
    assert synced.returncode == 0, synced.stderr
    rows = table(synced.stdout)
    assert rows["authorizations"] == "5" and rows["authorizers"] == "4" and rows["new"] == "5"
    assert rows["binding bound"] == "1"  # 21: open/get through retail (24)
    assert rows["binding unbound"] == "2"  # 23: open/get (25); 22: open/have (3)
    assert rows["binding unknown"] == "1"  # 24: no platform may ask
    assert rows["failures"] == "0"

    fault = {"endpoint": "api_get_authorizer_info", "errcode": 45009, "key": "wxa0000000000022"}
    httpx.post(f"{setup.sim}/sim/faults", json=fault).raise_for_status()
    again = setup.gateway("catalog", "sync", "--platform", "finance")
    assert again.returncode == 1
    rows = table(again.stdout)
    assert rows["platforms"] == "finance" and rows["authorizations"] == "3" and rows["failures"] == "1"
    problem = (
        "finance  wxa0000000000022  authorizer info: WeChat api_get_authorizer_info answered errcode 45009"
    )
    assert problem in again.stdout


def test_bad_arguments_are_refused(setup: Setup) -> None:
    unknown = setup.gateway("catalog", "sync", "--platform", "nowhere")
    assert unknown.returncode == 1
    assert "no platform 'nowhere'" in unknown.stderr
    zero = setup.gateway("catalog", "sync", "--concurrency", "0")
    assert zero.returncode == 2
    assert "must be at least 1" in zero.stderr

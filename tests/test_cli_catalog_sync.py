"""``gateway catalog sync [--platform ID] [--concurrency N]``, as a real process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.catalog.service import BINDINGS
from tests.conftest import PLATFORM_SECRETS
from tests.support.sockets import served

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
    with served(tmp_path) as both:
        for appid, (kind, components) in ACCOUNTS.items():
            account = {
                "authorizer_appid": appid,
                "kind": kind,
                "nick_name": appid,
                "principal_name": "ACME",
                "components": components,
            }
            httpx.post(f"{both.simulator}/sim/authorizers", json=account).raise_for_status()
        group = {
            "open_appid": GROUP_OPEN,
            "principal_name": "ACME",
            "verified": True,
            "members": ["wxa0000000000021"],
        }
        httpx.post(f"{both.simulator}/sim/open-accounts", json=group).raise_for_status()
        yield Setup(both.simulator, both.env)


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


def test_sync_json_is_the_summary_with_every_problem(setup: Setup) -> None:
    fault = {"endpoint": "api_get_authorizer_info", "errcode": 45009, "key": "wxa0000000000022"}
    httpx.post(f"{setup.sim}/sim/faults", json=fault).raise_for_status()
    synced = setup.gateway("catalog", "sync", "--json")
    assert synced.returncode == 1, synced.stderr
    document = json.loads(synced.stdout)  # stdout is the one document, nothing else
    assert list(document) == [
        "platforms",
        "authorizations",
        "authorizers",
        "new",
        "updated",
        "revoked",
        "refresh_tokens_recovered",
        "reauthorization_required",
        "bindings",
        "bound_unidentified",
        "bindings_kept",
        "problems",
        "duration_s",
        "failures",
    ]
    assert document["authorizations"] == 5 and document["failures"] == 1
    assert set(document["bindings"]) == set(BINDINGS) and document["bindings"]["unknown"] == 1
    (problem,) = document["problems"]
    assert (problem["platform_id"], problem["authorizer_appid"]) == ("finance", "wxa0000000000022")
    assert problem["problem"].startswith(
        "authorizer info: WeChat api_get_authorizer_info answered errcode 45009"
    )
    assert isinstance(document["duration_s"], float)
    for name, value in setup.env.items():  # no secret of the environment in it
        if name.endswith(("APPSECRET", "TOKEN", "AES_KEY", "SECRET_KEY")) and len(value) > 3:
            assert value not in synced.stdout, name


def test_bad_arguments_are_refused(setup: Setup) -> None:
    unknown = setup.gateway("catalog", "sync", "--platform", "nowhere")
    assert unknown.returncode == 1
    assert "no platform 'nowhere'" in unknown.stderr
    zero = setup.gateway("catalog", "sync", "--concurrency", "0")
    assert zero.returncode == 2
    assert "must be at least 1" in zero.stderr

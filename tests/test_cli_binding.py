"""``gateway open-binding check | ensure [--dry-run] | create --from``, as real processes."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import CLIENT_KEYS, PLATFORM_SECRETS
from tests.support.flows import approve_over_sockets
from tests.support.sockets import served

GROUP_OPEN = "wx0pen0000000001"
BOUND, UNBOUND, NO_SET, LONELY = (
    "wxa0000000000011",
    "wxa0000000000012",
    "wxa0000000000013",
    "wxa0000000000014",
)


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

    def members(self, open_appid: str) -> list[str]:
        accounts = httpx.get(f"{self.sim}/sim/state").json()["open_accounts"]
        return next(a["members"] for a in accounts if a["open_appid"] == open_appid)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    with served(tmp_path) as both:
        for appid, platform, sets in (
            (BOUND, "retail", [1, 24]),
            (UNBOUND, "retail", [1, 24]),
            (NO_SET, "finance", [1, 2]),
            (LONELY, "finance", [1, 24]),
        ):
            _authorize(both.simulator, both.gateway, platform, appid, sets)
        group = {"open_appid": GROUP_OPEN, "principal_name": "ACME", "verified": True, "members": [BOUND]}
        httpx.post(f"{both.simulator}/sim/open-accounts", json=group).raise_for_status()
        yield Setup(both.simulator, both.env)


def _authorize(sim: str, gateway: str, platform: str, appid: str, sets: list[int]) -> None:
    v = PLATFORM_SECRETS[platform]
    approve_over_sockets(sim, v["appid"], v["secret"], appid, sets)
    headers = {"Authorization": f"Bearer {CLIENT_KEYS['crm']}"}
    for _ in range(300):
        if httpx.get(f"{gateway}/v1/authorizers/{appid}/access-token", headers=headers).status_code == 200:
            return
        time.sleep(0.02)
    raise AssertionError(f"{appid} never reached the gateway")


def test_check_then_dry_run_then_ensure(setup: Setup) -> None:
    checked = setup.gateway("open-binding", "check")
    assert checked.returncode == 1, checked.stderr  # some accounts need attention
    assert (
        "bound " in checked.stdout
        and "unbound" in checked.stdout
        and "permission_set_missing" in checked.stdout
    )
    assert f"{NO_SET}  permission_set_missing" in checked.stdout

    dry = setup.gateway("open-binding", "ensure", "--dry-run")
    assert dry.returncode == 1
    assert setup.members(GROUP_OPEN) == [BOUND]  # nothing changed

    ensured = setup.gateway("open-binding", "ensure")
    assert "newly_bound" in ensured.stdout
    assert sorted(setup.members(GROUP_OPEN)) == sorted([BOUND, UNBOUND, LONELY])
    again = setup.gateway("open-binding", "check")
    assert f"{NO_SET}  permission_set_missing" in again.stdout
    assert "unbound" not in again.stdout


def test_create_from_prints_the_new_open_appid(setup: Setup) -> None:
    created = setup.gateway("open-binding", "create", "--from", LONELY)
    assert created.returncode == 0, created.stderr
    open_appid = created.stdout.split("created open account ")[1].split(";")[0]
    assert setup.members(open_appid) == [LONELY]
    refused = setup.gateway("open-binding", "create", "--from", LONELY)  # already bound: 89000
    assert refused.returncode == 1
    assert "already bound" in refused.stderr


def test_create_from_whose_answer_is_lost_sends_once_and_reads_back(setup: Setup) -> None:
    # WeChat creates the open account, then the answer is lost behind a 502.
    fault = {"endpoint": "open/create", "http_status": 502, "applied": True, "times": 1}
    httpx.post(f"{setup.sim}/sim/faults", json=fault).raise_for_status()
    httpx.post(f"{setup.sim}/sim/counters/reset").raise_for_status()
    created = setup.gateway("open-binding", "create", "--from", LONELY)
    assert created.returncode == 0, created.stderr
    open_appid = created.stdout.split("created open account ")[1].split(";")[0]
    assert setup.members(open_appid) == [LONELY]
    counters = httpx.get(f"{setup.sim}/sim/counters").json()
    assert counters["open/create"]["total"] == 1  # a resend would have met 89000

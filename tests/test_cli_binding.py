"""``gateway open-binding check | ensure [--dry-run] | create --from``, as real processes."""

from __future__ import annotations

import json
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
    def __init__(self, sim: str, env: dict[str, str], gateway_url: str) -> None:
        self.sim = sim
        self.env = env
        self.gateway_url = gateway_url

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
        yield Setup(both.simulator, both.env, both.gateway)


def _authorize(sim: str, gateway: str, platform: str, appid: str, sets: list[int], **profile: str) -> None:
    v = PLATFORM_SECRETS[platform]
    approve_over_sockets(sim, v["appid"], v["secret"], appid, sets, **profile)
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
    # Its principal's open account is the group's (the accounts bound to it say so): not without --force.
    planned = setup.gateway("open-binding", "create", "--from", LONELY)
    assert planned.returncode == 1 and GROUP_OPEN in planned.stderr and "--force" in planned.stderr
    assert "open/create" not in httpx.get(f"{setup.sim}/sim/counters").json()
    created = setup.gateway("open-binding", "create", "--from", LONELY, "--force")
    assert created.returncode == 0, created.stderr
    open_appid = created.stdout.split("created open account ")[1].split(";")[0]
    assert setup.members(open_appid) == [LONELY]
    assert f"{LONELY} is bound_elsewhere" in created.stdout  # its target stays the group's (§11)
    refused = setup.gateway("open-binding", "create", "--from", LONELY, "--force")  # already bound
    assert refused.returncode == 1
    assert "already bound" in refused.stderr


OUTSIDE = "wxa0000000000015"
SUBSIDIARY = "wxa0000000000016"
FIN_OPEN = "wx0pen0000000002"


def _binding_registry(setup: Setup, tmp_path: Path) -> str:
    """The served registry with a group.binding: ACME's own, a listed subsidiary, nothing for Outside."""
    config = Path(setup.env["GATEWAY_CONFIG"])
    group = (
        "group:\n  name: Test Group\n  open_appid: wx0pen0000000001\n  principal_name: ACME\n"
        f"  binding:\n    open_accounts:\n      - {{open_appid: {FIN_OPEN}, principal_name: ACME Finance}}\n"
    )
    text = config.read_text().replace("group: {name: Test Group, open_appid: wx0pen0000000001}\n", group)
    path = tmp_path / "binding.yaml"
    path.write_text(text)
    return str(path)


def test_dry_run_table_json_and_the_console_list(setup: Setup, tmp_path: Path) -> None:
    _authorize(setup.sim, setup.gateway_url, "retail", OUTSIDE, [1, 24], principal_name="Outside Co")
    _authorize(setup.sim, setup.gateway_url, "retail", SUBSIDIARY, [1, 24], principal_name="ACME Finance")
    fin = {"open_appid": FIN_OPEN, "principal_name": "ACME Finance", "verified": True, "members": []}
    httpx.post(f"{setup.sim}/sim/open-accounts", json=fin).raise_for_status()
    config = _binding_registry(setup, tmp_path)
    httpx.post(f"{setup.sim}/sim/counters/reset").raise_for_status()

    table = setup.gateway("open-binding", "ensure", "--dry-run", "--config", config)
    assert table.returncode == 1, table.stderr
    lines = {line.split()[0]: line.split() for line in table.stdout.splitlines() if line.startswith("wx")}
    assert lines[UNBOUND][-3:] == ["bind", GROUP_OPEN, "unbound"]
    assert lines[SUBSIDIARY][-3:] == ["bind", FIN_OPEN, "unbound"]
    assert lines[OUTSIDE][-3:] == ["console", GROUP_OPEN, "console_binding_needed"]
    assert lines[BOUND][-3:] == ["nothing", GROUP_OPEN, "bound"]
    assert lines[NO_SET] == [NO_SET, "permission_set_missing"]
    assert "nothing was changed" in table.stdout

    as_json = setup.gateway("open-binding", "ensure", "--dry-run", "--json", "--config", config)
    document = json.loads(as_json.stdout)
    assert document["dry_run"] is True
    by_appid = {a["appid"]: a for a in document["accounts"]}
    assert (by_appid[OUTSIDE]["action"], by_appid[OUTSIDE]["target"]) == ("console", GROUP_OPEN)
    assert by_appid[OUTSIDE]["reason"] == "principal_mismatch"
    assert by_appid[SUBSIDIARY]["action"] == "bind" and by_appid[NO_SET]["action"] is None
    counters = httpx.get(f"{setup.sim}/sim/counters").json()
    assert "open/bind" not in counters and "open/create" not in counters  # a plan sends nothing
    assert setup.members(GROUP_OPEN) == [BOUND] and setup.members(FIN_OPEN) == []

    # A dry run records nothing, so the console list is empty until something checks.
    assert setup.gateway("open-binding", "console-list", "--csv", "--config", config).stdout.splitlines() == [
        "authorizer_appid,name,principal_name,target_open_appid"
    ]
    ensured = setup.gateway("open-binding", "ensure", "--config", config)
    assert "newly_bound" in ensured.stdout
    assert setup.members(FIN_OPEN) == [SUBSIDIARY]
    assert OUTSIDE not in setup.members(GROUP_OPEN)
    listed = setup.gateway("open-binding", "console-list", "--csv", "--config", config)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [
        "authorizer_appid,name,principal_name,target_open_appid",
        f"{OUTSIDE},{OUTSIDE},Outside Co,{GROUP_OPEN}",
    ]
    shown = setup.gateway("open-binding", "console-list", "--config", config)
    assert OUTSIDE in shown.stdout and "Open Platform console" in shown.stdout
    as_json = setup.gateway("open-binding", "console-list", "--json", "--config", config)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == [
        {
            "authorizer_appid": OUTSIDE,
            "name": OUTSIDE,
            "principal_name": "Outside Co",
            "target_open_appid": GROUP_OPEN,
        }
    ]
    both = setup.gateway("open-binding", "console-list", "--json", "--csv", "--config", config)
    assert both.returncode == 2 and "not allowed with" in both.stderr


def test_mark_verified_names_only_open_accounts_the_gateway_made(setup: Setup) -> None:
    created = setup.gateway("open-binding", "create", "--from", LONELY, "--force")
    open_appid = created.stdout.split("created open account ")[1].split(";")[0]
    assert setup.gateway("open-binding", "mark-verified", open_appid).returncode == 0
    refused = setup.gateway("open-binding", "mark-verified", GROUP_OPEN)
    assert refused.returncode == 1 and "not an open account the gateway created" in refused.stderr


def test_create_from_whose_answer_is_lost_sends_once_and_reads_back(setup: Setup) -> None:
    # WeChat creates the open account, then the answer is lost behind a 502.
    fault = {"endpoint": "open/create", "http_status": 502, "applied": True, "times": 1}
    httpx.post(f"{setup.sim}/sim/faults", json=fault).raise_for_status()
    httpx.post(f"{setup.sim}/sim/counters/reset").raise_for_status()
    created = setup.gateway("open-binding", "create", "--from", LONELY, "--force")
    assert created.returncode == 0, created.stderr
    open_appid = created.stdout.split("created open account ")[1].split(";")[0]
    assert setup.members(open_appid) == [LONELY]
    counters = httpx.get(f"{setup.sim}/sim/counters").json()
    assert counters["open/create"]["total"] == 1  # a resend would have met 89000

"""The previous release runs on this release's schema (docs/operations.md, "Upgrades and rollbacks"): its
code, taken from git history at the commit `tests/previous_release.txt` names, serves a database this
release migrated — without migrating it, as a rolled-back replica or one not yet replaced in a rolling
update does — through its own HTTP surface against its own simulator: tickets pushed, an account
authorized, tokens handed out on /v1 and /wx, a call proxied, a user message taken in, the catalog synced
and read. A migration that drops or renames what the previous release uses fails it.

Without the repository's history (an export, a shallow clone) the test fails saying so: CI runs on a full
clone."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from gateway.store import create_engine, upgrade

ROOT = Path(__file__).resolve().parents[1]
PINNED = Path(__file__).with_name("previous_release.txt")
# What the script needs of the previous release: its gateway and its in-process test world.
TAKEN = ("gateway", "tests/__init__.py", "tests/conftest.py", "tests/support")

# Runs with the previous release's code first on sys.path; written against that release's test support
# (tests/support/world.py), the SPEC's HTTP surface doing the rest.
SCRIPT = """
import asyncio
import os
import sys
from pathlib import Path

import gateway

HERE = Path(__file__).resolve().parent
if not Path(gateway.__file__).resolve().is_relative_to(HERE):
    sys.exit(f"not the previous release's code: gateway from {gateway.__file__}")

from gateway.crypto import SecretBox
from gateway.registry.model import parse_registry
from tests.conftest import CLIENT_KEYS, REGISTRY_YAML, registry_environ
from tests.support.flows import push_ticket
from tests.support.world import FINANCE, OA, RETAIL, open_world


def check(condition, what):
    if not condition:
        sys.exit(f"the previous release failed on this schema: {what}")


def bearer(client):
    return {"Authorization": f"Bearer {CLIENT_KEYS[client]}"}


async def main(database_url):
    registry = parse_registry(REGISTRY_YAML, source="registry.yaml", environ=registry_environ())
    async with open_world(registry, database_url, SecretBox(os.urandom(32)), migrate=False) as world:
        for values in (RETAIL, FINANCE):
            report = await push_ticket(world.sim, values["appid"])
            check(report["body"] == "success", f"a ticket push was answered {report}")
        await world.authorize("retail", OA, [1, 2, 24])
        token = await world.token(OA)
        check(token.status_code == 200 and token.json().get("access_token"), f"/v1 token: {token.text}")
        params = {"grant_type": "client_credential", "appid": OA, "secret": CLIENT_KEYS["crm"]}
        wx = (await world.gateway.get("/wx/cgi-bin/token", params=params)).json()
        check("access_token" in wx, f"/wx token: {wx}")
        users = await world.gateway.get("/wx/cgi-bin/user/get", params={"access_token": wx["access_token"]})
        check(users.status_code == 200 and users.json().get("total", 0) >= 1, f"/wx proxy: {users.text}")
        message = {"MsgType": "text", "Content": "hello", "MsgId": 7001}
        relayed = await world.sim.post(
            f"/sim/components/{RETAIL['appid']}/messages",
            json={"authorizer_appid": OA, "fields": message},
        )
        check(relayed.json().get("status") == 200, f"a user message: {relayed.text}")
        await world.services.catalog_sync.run()
        catalog = await world.gateway.get("/v1/catalog", headers=bearer("audit"))
        rows = catalog.json().get("items", []) if catalog.status_code == 200 else []
        check([row["authorizer_appid"] for row in rows] == [OA], f"catalog: {catalog.text}")
        await world.services.audit.flush()
        audit = await world.gateway.get("/v1/audit-log", headers=bearer("audit"))
        check(audit.status_code == 200 and audit.json().get("items"), f"audit log: {audit.text}")
        ready = (await world.gateway.get("/readyz")).json()
        ages = [platform["ticket_age_s"] for platform in ready["platforms"]]
        check(ready["status"] == "ready" and None not in ages, f"readyz: {ready}")
    print("the previous release works on this schema")


asyncio.run(main(sys.argv[1]))
"""


def previous_release() -> str:
    """The commit `tests/previous_release.txt` names (comment lines start with ``#``)."""
    lines = [line.strip() for line in PINNED.read_text().splitlines()]
    shas = [line for line in lines if line and not line.startswith("#")]
    assert len(shas) == 1 and len(shas[0]) == 40, f"{PINNED} must hold one full commit sha"
    return shas[0]


@pytest.fixture(scope="module")
def previous_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The previous release's gateway and test support, extracted from git, and the script beside them."""
    sha = previous_release()
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", sha, *TAKEN],
            capture_output=True,
            check=False,
            timeout=60,
        )
    except FileNotFoundError:
        pytest.fail(
            "git is not installed: this test takes the previous release from the repository's history"
        )
    if archive.returncode != 0:
        pytest.fail(
            f"cannot take the previous release {sha} from git history in {ROOT}: "
            f"{archive.stderr.decode(errors='replace').strip()}. This test needs the repository with its "
            "history (a full clone, not an export or a shallow clone)"
        )
    root = tmp_path_factory.mktemp("previous-release")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(root, filter="data")
    (root / "run_previous_release.py").write_text(SCRIPT)
    return root


async def test_the_previous_release_runs_on_this_releases_schema(
    database_url: str, previous_code: Path
) -> None:
    engine = create_engine(database_url)
    try:
        assert (await upgrade(engine)).state == "at_head"
    finally:
        await engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_") and k != "PYTHONPATH"}
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(previous_code / "run_previous_release.py"), database_url],
        cwd=previous_code,
        env=env | {"PYTHONPATH": str(previous_code)},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-6000:]
    assert "the previous release works on this schema" in result.stdout

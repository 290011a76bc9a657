"""End to end: real ``gateway`` processes on loopback sockets, WeChat played by ``gateway simulate``."""

from __future__ import annotations

import base64
import html
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.servers import free_port

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "config" / "registry.example.yaml"
RETAIL_APPID = "wxc0mp000000001"


def wait_for(check: Callable[[], Any], *, timeout: float = 30, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy without raising."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last error: {last!r})")


class Process:
    """A ``gateway`` subcommand running in the background, its output collected in a file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", *args],
            env=env,
            cwd=ROOT,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._out.close()
        return code

    def output(self) -> str:
        return self.log.read_text()


@pytest.fixture
def environment(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    for prefix in ("RETAIL", "FINANCE", "SERVICES"):
        env[f"{prefix}_APPSECRET"] = f"{prefix.lower()}-secret"
        env[f"{prefix}_TOKEN"] = f"{prefix.lower()}token"
        env[f"{prefix}_AES_KEY"] = (prefix * 10)[:43]
    env["GATEWAY_SECRET_KEY"] = base64.b64encode(os.urandom(32)).decode()
    env["GATEWAY_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    # Outside the demo, serve runs on the example registry's public keys and a loopback URL only when told.
    env["GATEWAY_PUBLIC_URL"] = "http://127.0.0.1:8000"
    env["GATEWAY_ALLOW_UNSAFE"] = "example-keys"
    return env


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.stop(signal.SIGKILL)


def _ticket_age(gateway_url: str, platform: str) -> int | None:
    ready = httpx.get(f"{gateway_url}/readyz", timeout=5).json()
    age: int | None = {p["id"]: p for p in ready["platforms"]}[platform]["ticket_age_s"]
    return age


def test_serve_takes_simulator_pushes_and_keeps_them_across_restarts(
    tmp_path: Path, environment: dict[str, str], processes: list[Process]
) -> None:
    gateway_port, simulator_port = free_port(), free_port()
    gateway_url, simulator_url = f"http://127.0.0.1:{gateway_port}", f"http://127.0.0.1:{simulator_port}"
    registry = tmp_path / "registry.yaml"
    registry.write_text(EXAMPLE.read_text().replace("http://127.0.0.1:8001", simulator_url))
    serve_args = ["serve", "--config", str(registry), "--port", str(gateway_port)]

    simulator = Process(
        ["simulate", "--config", str(registry), "--gateway-url", gateway_url, "--port", str(simulator_port)],
        environment,
        tmp_path / "simulator.log",
    )
    gateway = Process(serve_args, environment, tmp_path / "gateway-1.log")
    processes.extend([simulator, gateway])
    wait_for(lambda: httpx.get(f"{gateway_url}/readyz", timeout=5).status_code == 200, what="gateway ready")

    pushed = wait_for(
        lambda: httpx.post(f"{simulator_url}/sim/components/{RETAIL_APPID}/push-ticket", timeout=5).json(),
        what="a ticket push",
    )
    assert (pushed["status"], pushed["body"]) == (200, "success")
    assert _ticket_age(gateway_url, "retail") is not None

    assert gateway.stop(signal.SIGTERM) == 0, gateway.output()
    restarted = Process(serve_args, environment, tmp_path / "gateway-2.log")
    processes.append(restarted)
    wait_for(lambda: httpx.get(f"{gateway_url}/readyz", timeout=5).status_code == 200, what="restart")
    assert _ticket_age(gateway_url, "retail") is not None, "the ticket did not survive the restart"
    assert restarted.stop(signal.SIGTERM) == 0
    for secret in (
        "retail-secret",
        "retailtoken",
        environment["RETAIL_AES_KEY"],
        environment["GATEWAY_SECRET_KEY"],
    ):
        assert secret not in gateway.output() + restarted.output()


def start_demo(tmp_path: Path, processes: list[Process]) -> tuple[Process, int, int]:
    """`gateway demo` on free ports, as a newcomer runs it: none of the suite's settings in its env."""
    gateway_port, simulator_port = free_port(), free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GATEWAY_", "RETAIL_", "FINANCE_", "SERVICES_"))
    }
    demo = Process(
        ["demo", "--port", str(gateway_port), "--simulator-port", str(simulator_port)],
        env,
        tmp_path / "demo.log",
    )
    processes.append(demo)
    return demo, gateway_port, simulator_port


def test_demo_starts_pushes_seeds_and_stops_on_ctrl_c(tmp_path: Path, processes: list[Process]) -> None:
    demo, gateway_port, simulator_port = start_demo(tmp_path, processes)
    gateway_url, simulator_url = f"http://127.0.0.1:{gateway_port}", f"http://127.0.0.1:{simulator_port}"

    def every_platform_has_a_ticket() -> bool:
        ready = httpx.get(f"{gateway_url}/readyz", timeout=5).json()
        return len(ready["platforms"]) == 3 and all(p["ticket_age_s"] is not None for p in ready["platforms"])

    wait_for(every_platform_has_a_ticket, timeout=60, what="tickets on every platform")
    wait_for(lambda: "Ctrl-C" in demo.output(), what="the welcome text, printed once the demo is ready")
    state = httpx.get(f"{simulator_url}/sim/state", timeout=5).json()
    assert "wxa0000000000001" in str(state)
    assert "wxc0000000000003" in str(state)
    token = wait_for(
        lambda: httpx.get(
            f"{gateway_url}/v1/authorizers/wxa0000000000001/access-token",
            headers={"Authorization": "Bearer demo-crm-key"},
            timeout=5,
        ).json()["access_token"],
        what="a token for a demo account",
    )
    assert token not in demo.output()
    assert gateway_url in demo.output()
    assert simulator_url in demo.output()
    onboard_through_the_printed_invite(demo.output(), gateway_url, simulator_url)
    assert demo.stop(signal.SIGINT) == 0, demo.output()


def onboard_through_the_printed_invite(output: str, gateway_url: str, simulator_url: str) -> None:
    """What a newcomer does with the demo's invite, as a browser would: the start page, its PC link to the
    simulator's authorization page (Referer: the gateway's origin), an account, approval, the way back."""
    found = re.search(rf"{re.escape(gateway_url)}/wechat/[a-z]+/authorize\?invite=\S+", output)
    assert found, output
    with httpx.Client(timeout=10) as browser:
        start = browser.get(found.group(0))
        assert start.status_code == 200, start.text
        pc_link = html.unescape(re.search(r'id="pc-link" href="([^"]+)"', start.text).group(1))  # type: ignore[union-attr]
        assert pc_link.startswith(f"{simulator_url}/cgi-bin/componentloginpage?")
        assert browser.get(pc_link).status_code == 403  # pasted into the address bar: no Referer
        listing = browser.get(pc_link, headers={"Referer": f"{gateway_url}/"})
        assert listing.status_code == 200, listing.text
        account = html.unescape(re.search(r'<a href="([^"]+)">ACME Retail</a>', listing.text).group(1))  # type: ignore[union-attr]
        choose = browser.get(f"{simulator_url}{account}", headers={"Referer": pc_link})
        assert choose.status_code == 200, choose.text
        form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', choose.text))
        form = {name: html.unescape(value) for name, value in form.items()}
        boxes = re.findall(r'name="func_id" value="(\d+)" checked', choose.text)
        approved = browser.post(
            f"{simulator_url}/cgi-bin/componentloginpage",
            data={**form, "func_id": boxes},
            follow_redirects=True,
        )
        assert approved.status_code == 200, approved.text
        assert str(approved.url).startswith(f"{gateway_url}/wechat/")
        assert "Authorization complete" in approved.text and "ACME Retail" in approved.text


def test_the_demo_catalog_shows_every_binding_state(tmp_path: Path, processes: list[Process]) -> None:
    demo, gateway_port, _ = start_demo(tmp_path, processes)
    wait_for(lambda: "Ctrl-C" in demo.output(), timeout=60, what="the welcome text")
    catalog = httpx.get(
        f"http://127.0.0.1:{gateway_port}/v1/catalog",
        headers={"Authorization": "Bearer demo-audit-key"},
        timeout=5,
    ).json()
    states = {row["authorizer_appid"]: row["binding"] for row in catalog["items"]}
    assert states == {
        "wxa0000000000001": "bound",
        "wxb0000000000002": "unbound",  # the listed subsidiary: the API can bind it
        "wxc0000000000003": "unbound",
        "wxd0000000000004": "console_binding_needed",  # outside the group's principals
        "wxe0000000000005": "bound_elsewhere",
        "wxf0000000000006": "unknown",
    }
    assert demo.stop(signal.SIGINT) == 0, demo.output()

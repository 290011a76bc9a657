"""Onboarding with real processes: ``gateway onboarding invite`` prints an invite, and an administrator's
browser (Debian's chromium, driven by Playwright) opens it, follows the PC link to WeChat's authorization
page (here ``gateway simulate``'s, which checks the Referer as WeChat does) and comes back authorized.

The gateway is ``gateway serve`` on a loopback port, WeChat is ``gateway simulate`` on another, both from
the example registry. Never a browser download: without /usr/bin/chromium the browser test fails.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import msgspec
import pytest
from playwright.sync_api import Request, Route, sync_playwright

from tests.support.servers import free_port
from tests.test_catalog_page import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.test_e2e import EXAMPLE, ROOT, Process, wait_for

RETAIL_APPID = "wxc0mp000000001"
NEW = "wxa0000000000031"


class Site(msgspec.Struct, frozen=True):
    gateway: str
    simulator: str
    env: dict[str, str]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """``gateway serve`` and ``gateway simulate`` on free ports, a ticket pushed to every platform."""
    tmp = tmp_path_factory.mktemp("onboarding")
    gateway_port, simulator_port = free_port(), free_port()
    gateway, simulator = f"http://127.0.0.1:{gateway_port}", f"http://127.0.0.1:{simulator_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    for prefix in ("RETAIL", "FINANCE", "SERVICES"):
        env[f"{prefix}_APPSECRET"] = f"{prefix.lower()}-secret"
        env[f"{prefix}_TOKEN"] = f"{prefix.lower()}token"
        env[f"{prefix}_AES_KEY"] = (prefix * 10)[:43]
    registry = tmp / "registry.yaml"
    # The example registry's WeChat (API and authorization pages) is the simulator on port 8001.
    registry.write_text(EXAMPLE.read_text().replace("http://127.0.0.1:8001", simulator))
    env |= {
        "GATEWAY_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
        "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'gateway.db'}",
        "GATEWAY_PUBLIC_URL": gateway,
        "GATEWAY_ALLOW_UNSAFE": "example-keys",
        "GATEWAY_CONFIG": str(registry),
        "GATEWAY_CATALOG_SYNC_INTERVAL_S": "0",
    }
    simulate = [
        "simulate",
        "--config",
        str(registry),
        "--gateway-url",
        gateway,
        "--port",
        str(simulator_port),
    ]
    processes = [
        Process([*simulate, "--ticket-interval", "0"], env, tmp / "simulator.log"),
        Process(["serve", "--port", str(gateway_port)], env, tmp / "gateway.log"),
    ]
    try:
        wait_for(lambda: httpx.get(f"{gateway}/readyz", timeout=5).status_code == 200, what="gateway ready")
        pushed = wait_for(
            lambda: httpx.post(f"{simulator}/sim/components/{RETAIL_APPID}/push-ticket", timeout=5).json(),
            what="a ticket push",
        )
        assert pushed["body"] == "success", pushed
        yield Site(gateway, simulator, env)
    finally:
        for process in processes:
            process.stop(signal.SIGTERM)


def test_the_cli_prints_an_invite_that_opens_the_start_page(site: Site) -> None:
    made = site.cli("onboarding", "invite", "--platform", "retail", "--auth-type", "1", "--valid-days", "2")
    assert made.returncode == 0, made.stderr
    url = made.stdout.strip()
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{site.gateway}/wechat/retail/authorize"
    assert "valid until" in made.stderr
    page = httpx.get(url, timeout=10)
    assert page.status_code == 200, page.text
    assert "auth_type=1" in page.text
    assert page.headers["referrer-policy"] == "strict-origin-when-cross-origin"

    audit = httpx.get(
        f"{site.gateway}/v1/audit-log",
        params={"action": "invite.created", "actor": "cli"},
        headers={"Authorization": "Bearer demo-ops-key"},
        timeout=10,
    ).json()
    [record] = audit["items"]
    assert record["platform"] == "retail" and "valid until" in record["detail"]

    for args, said in (
        (["--platform", "nowhere"], "no platform 'nowhere'"),
        (["--platform", "retail", "--biz-appid", "nope"], "biz_appid"),
    ):
        refused = site.cli("onboarding", "invite", *args)
        assert refused.returncode == 1 and said in refused.stderr, refused.stderr
        assert refused.stdout == ""
    too_long = site.cli("onboarding", "invite", "--platform", "retail", "--valid-days", "31")
    assert too_long.returncode == 2 and "at most 30 days" in too_long.stderr


def test_an_administrator_onboards_in_a_real_browser(site: Site, tmp_path: Path) -> None:
    started = time.monotonic()
    account = {
        "authorizer_appid": NEW,
        "kind": "official_account",
        "nick_name": "ACME Outlet",
        "principal_name": "ACME Retail Co., Ltd.",
        "components": {},
    }
    httpx.post(f"{site.simulator}/sim/authorizers", json=account, timeout=5).raise_for_status()
    invite = site.cli("onboarding", "invite", "--platform", "retail").stdout.strip()
    referers: list[str | None] = []

    def at_wechat(route: Route, request: Request) -> None:
        # WeChat's host as the browser reaches it: what it would see of where the administrator came from.
        if request.is_navigation_request():
            referers.append(request.header_value("referer"))
        route.continue_()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda message: message.type == "error" and errors.append(message.text))
            page.route(f"{site.simulator}/cgi-bin/componentloginpage*", at_wechat)

            page.goto(invite)
            page.screenshot(path=ARTIFACTS / "onboarding-start-page.png", full_page=True)
            assert page.title().startswith("Authorize Retail services platform")
            assert page.locator("figure.qr svg").count() == 1
            code = parse_qs(urlsplit(page.get_attribute("#pc-link", "href") or "").query)["pre_auth_code"][0]
            page.click("#pc-link")
            page.wait_for_url(f"{site.simulator}/cgi-bin/componentloginpage*")
            assert referers == [f"{site.gateway}/"], referers  # the origin, never the invite
            assert "Choose an account" in page.content()

            page.click("text=ACME Outlet")
            page.click("button[type=submit]")
            page.wait_for_url(f"{site.gateway}/wechat/retail/authorized*")
            assert "Authorization complete" in page.content()
            assert "ACME Outlet" in page.content()

            # The code was used: the same link, even from the start page's origin, is refused now.
            page.goto(invite)
            fresh = parse_qs(urlsplit(page.get_attribute("#pc-link", "href") or "").query)["pre_auth_code"][0]
            assert fresh != code
            assert errors == []
        finally:
            browser.close()
    used = httpx.get(
        f"{site.simulator}/cgi-bin/componentloginpage",
        params={"component_appid": RETAIL_APPID, "pre_auth_code": code, "redirect_uri": f"{site.gateway}/x"},
        headers={"Referer": f"{site.gateway}/"},
        timeout=5,
    )
    assert used.status_code == 409
    assert time.monotonic() - started < 20

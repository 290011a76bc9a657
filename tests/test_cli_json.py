"""``gateway --version``, ``gateway new-webhook-secret``, and ``--json`` of the commands that have no test
module of their own (``check-config``, ``onboarding invite``). The --json of the other commands is tested
beside their tables: tests/test_cli_deliveries.py, test_cli_binding.py, test_cli_catalog_sync.py,
test_rotation.py."""

from __future__ import annotations

import base64
import importlib.metadata
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from gateway.cli.main import main
from gateway.delivery.webhooks import sign_standard
from tests.conftest import REGISTRY_YAML, registry_environ


def gateway(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``gateway ARGS`` as a real process, without the caller's ``GATEWAY_*`` variables."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env=base | (env or {}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_version_prints_the_installed_version_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    installed = importlib.metadata.version("group-gateway")
    result = gateway("--version")
    assert (result.returncode, result.stdout, result.stderr) == (0, f"gateway {installed}\n", "")
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"gateway {installed}\n"


def test_new_webhook_secret_is_a_standard_webhooks_secret() -> None:
    result = gateway("new-webhook-secret")
    assert result.returncode == 0, result.stderr
    secret = result.stdout.strip()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    now = str(int(time.time()))
    headers = {
        "webhook-id": "018f332ae47b297659a12d3f",
        "webhook-timestamp": now,
        "webhook-signature": sign_standard([secret], "018f332ae47b297659a12d3f", now, b"{}"),
    }
    assert Webhook(secret).verify(b"{}", headers) == {}
    assert gateway("new-webhook-secret").stdout != result.stdout


def test_check_config_json(tmp_path: Path) -> None:
    registry = tmp_path / "registry.yaml"
    registry.write_text(REGISTRY_YAML)
    result = gateway("check-config", "--json", str(registry), env=registry_environ())
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "file": str(registry),
        "valid": True,
        "platforms": 2,
        "clients": 5,
        "pins": 0,
        "subscriptions": 0,
    }
    for value in registry_environ().values():
        assert value not in result.stdout
    broken = gateway("check-config", "--json", str(registry))  # the ${VAR}s unset: refused as before
    assert broken.returncode == 2 and broken.stdout == "" and "is not set" in broken.stderr


def test_onboarding_invite_json(tmp_path: Path) -> None:
    registry = tmp_path / "registry.yaml"
    registry.write_text(REGISTRY_YAML)
    key = base64.b64encode(os.urandom(32)).decode()
    env = registry_environ() | {
        "GATEWAY_CONFIG": str(registry),
        "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
        "GATEWAY_SECRET_KEY": key,
    }
    before = int(time.time())
    result = gateway(
        "onboarding",
        "invite",
        "--platform",
        "retail",
        "--auth-type",
        "1",
        "--valid-days",
        "2",
        "--json",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert list(document) == ["platform", "auth_type", "biz_appid", "url", "expires_at"]
    assert (document["platform"], document["auth_type"], document["biz_appid"]) == ("retail", 1, None)
    assert "/wechat/retail/authorize?" in document["url"]
    assert before + 2 * 86400 <= document["expires_at"] <= int(time.time()) + 2 * 86400
    for value in [key, *registry_environ().values()]:
        assert value not in result.stdout

"""The ``gateway`` command line, run as a real process."""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REGISTRY_YAML, registry_environ

EXAMPLE = Path(__file__).parents[1] / "config" / "registry.example.yaml"
EXAMPLE_ENV = {
    f"{prefix}_{suffix}": value
    for prefix in ("RETAIL", "FINANCE", "SERVICES")
    for suffix, value in (("APPSECRET", "s3cret-value"), ("TOKEN", "tok3nvalue"), ("AES_KEY", "A" * 43))
}


def gateway(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``gateway ARGS`` with a clean environment plus ``env``."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GATEWAY_", "RETAIL_", "FINANCE_", "SERVICES_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env=base | (env or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_check_config_accepts_the_example() -> None:
    result = gateway("check-config", str(EXAMPLE), env=EXAMPLE_ENV)
    assert result.returncode == 0, result.stderr
    assert "valid: 3 platforms, 5 clients, 1 pins" in result.stdout


def test_check_config_refuses_with_file_and_path(tmp_path: Path) -> None:
    bad = tmp_path / "registry.yaml"
    bad.write_text(EXAMPLE.read_text().replace("${FINANCE_AES_KEY}", "tooShort"))
    result = gateway("check-config", str(bad), env=EXAMPLE_ENV)
    assert result.returncode == 2
    assert f"{bad}: platforms[1].encoding_aes_key:" in result.stderr
    assert "tooShort" not in result.stderr


def test_check_config_names_an_unset_variable() -> None:
    env = {k: v for k, v in EXAMPLE_ENV.items() if k != "SERVICES_TOKEN"}
    result = gateway("check-config", str(EXAMPLE), env=env)
    assert result.returncode == 2
    assert "platforms[2].token" in result.stderr
    assert "SERVICES_TOKEN" in result.stderr


def test_serve_refuses_to_start_on_a_bad_registry(tmp_path: Path) -> None:
    bad = tmp_path / "registry.yaml"
    bad.write_text(REGISTRY_YAML.replace("scopes: [token, proxy]", "scopes: []"))
    env = registry_environ() | {
        "GATEWAY_SECRET_KEY": "A" * 43 + "=",
        "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'g.db'}",
    }
    result = gateway("serve", "--config", str(bad), "--port", "1", env=env)
    assert result.returncode == 2
    assert f"{bad}: clients[0].scopes:" in result.stderr
    assert not (tmp_path / "g.db").exists()


def test_serve_requires_a_secret_key(tmp_path: Path) -> None:
    result = gateway("serve", "--config", str(EXAMPLE), env=EXAMPLE_ENV)
    assert result.returncode == 2
    assert "GATEWAY_SECRET_KEY is not set" in result.stderr


def test_new_client_key_prints_a_key_and_its_digest() -> None:
    result = gateway("new-client-key")
    assert result.returncode == 0
    key = re.search(r"client key .*:\s+(\S+)", result.stdout)
    digest = re.search(r"key_sha256 .*:\s+([0-9a-f]{64})", result.stdout)
    assert key
    assert digest
    assert hashlib.sha256(key.group(1).encode()).hexdigest() == digest.group(1)
    assert len(key.group(1)) >= 40
    assert gateway("new-client-key").stdout != result.stdout


def test_db_upgrade_creates_the_schema(tmp_path: Path) -> None:
    database = tmp_path / "fresh.db"
    result = gateway("db", "upgrade", env={"GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{database}"})
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(database) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"alembic_version", "component_tickets", "component_pushes"} <= tables


@pytest.mark.parametrize("args", [[], ["nonsense"], ["check-config"]])
def test_usage_errors_exit_2(args: list[str]) -> None:
    assert gateway(*args).returncode == 2

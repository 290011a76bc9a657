"""`gateway serve` outside the demo refuses the example registry's public keys, a database or public URL
left to its default and a plain-http public URL others reach — exit 2, one message each naming the
setting and the override — and starts once each is fixed or overridden."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import msgspec
import pytest

from gateway.observability.preflight import EXAMPLE_CLIENT_KEYS, unsafe_settings
from gateway.registry.model import parse_registry
from gateway.settings import Settings
from tests.conftest import REGISTRY_YAML, registry_environ
from tests.support.servers import free_port
from tests.test_cli import EXAMPLE, EXAMPLE_ENV
from tests.test_e2e import Process, wait_for

KEY = base64.b64encode(os.urandom(32)).decode()
# The test registry's ops client (scopes component, admin, catalog) given the public demo admin key.
OPS_DIGEST = re.search(r'id: ops, key_sha256: "([0-9a-f]{64})"', REGISTRY_YAML)
assert OPS_DIGEST
DEMO_ADMIN_YAML = REGISTRY_YAML.replace(OPS_DIGEST.group(1), hashlib.sha256(b"demo-ops-key").hexdigest())


def serve(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``gateway serve ARGS`` run in ``tmp_path`` (where a default database would land) with only
    ``env`` of the gateway's settings; a refusal ends it at once."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GATEWAY_", "RETAIL_", "FINANCE_", "SERVICES_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--port", str(free_port()), *args],
        env=base | env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def given(tmp_path: Path, registry_yaml: str = REGISTRY_YAML) -> dict[str, str]:
    """Every setting serve wants given, given well: nothing to refuse."""
    config = tmp_path / "registry.yaml"
    config.write_text(registry_yaml)
    return registry_environ() | {
        "GATEWAY_CONFIG": str(config),
        "GATEWAY_SECRET_KEY": KEY,
        "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'state.db'}",
        "GATEWAY_PUBLIC_URL": "https://gw.example.com",
        "GATEWAY_CATALOG_SYNC_INTERVAL_S": "0",
    }


def test_the_public_demo_keys_are_those_of_the_example_registry() -> None:
    digests = set(re.findall(r"key_sha256: ([0-9a-f]{64})", EXAMPLE.read_text()))
    assert digests == {hashlib.sha256(key.encode()).hexdigest() for key in EXAMPLE_CLIENT_KEYS}


def test_the_example_registry_is_refused_naming_every_demo_client(tmp_path: Path) -> None:
    env = given(tmp_path) | EXAMPLE_ENV | {"GATEWAY_CONFIG": str(EXAMPLE)}
    result = serve(tmp_path, env)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "clients crm, payments, onboarding, audit, ops have a public demo key" in line
    assert "--allow-unsafe example-keys (GATEWAY_ALLOW_UNSAFE=example-keys)" in line
    assert not (tmp_path / "state.db").exists()


def test_one_demo_key_is_enough_to_refuse_the_admin_one_included(tmp_path: Path) -> None:
    result = serve(tmp_path, given(tmp_path, DEMO_ADMIN_YAML))
    assert result.returncode == 2
    assert "client ops has a public demo key of config/registry.example.yaml" in result.stderr


def test_a_database_url_left_to_its_default_is_refused(tmp_path: Path) -> None:
    env = given(tmp_path)
    del env["GATEWAY_DATABASE_URL"]
    result = serve(tmp_path, env)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("gateway: GATEWAY_DATABASE_URL is not set")
    assert list(tmp_path.glob("gateway.db*")) == []


def test_a_public_url_left_to_its_default_is_refused(tmp_path: Path) -> None:
    env = given(tmp_path)
    del env["GATEWAY_PUBLIC_URL"]
    result = serve(tmp_path, env)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("gateway: GATEWAY_PUBLIC_URL is not set")
    assert "http://127.0.0.1:8000 written out" in line


def test_a_plain_http_public_url_others_reach_is_refused(tmp_path: Path) -> None:
    result = serve(tmp_path, given(tmp_path) | {"GATEWAY_PUBLIC_URL": "http://gw.example.com"})
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "GATEWAY_PUBLIC_URL is plain http" in line
    assert "--allow-unsafe http-public-url (GATEWAY_ALLOW_UNSAFE=http-public-url)" in line


def test_every_refusal_is_said_at_once(tmp_path: Path) -> None:
    env = EXAMPLE_ENV | {"GATEWAY_SECRET_KEY": KEY, "GATEWAY_CONFIG": str(EXAMPLE)}
    result = serve(tmp_path, env)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 3
    assert [
        "public demo key" in lines[0],
        "GATEWAY_DATABASE_URL" in lines[1],
        "GATEWAY_PUBLIC_URL" in lines[2],
    ] == [
        True,
        True,
        True,
    ]


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8000", "http://localhost:9000", "http://127.0.0.2", "http://[::1]:8000"],
)
def test_loopback_and_https_public_urls_need_no_override(url: str) -> None:
    registry = parse_registry(REGISTRY_YAML, source="r.yaml", environ=registry_environ())
    for public_url in (url, "https://gw.example.com"):
        settings = Settings.from_environ(
            {"GATEWAY_DATABASE_URL": "sqlite+aiosqlite:///./gateway.db", "GATEWAY_PUBLIC_URL": public_url}
        )
        assert unsafe_settings(settings, registry) == []


def test_each_override_lifts_its_refusal_only() -> None:
    registry = parse_registry(DEMO_ADMIN_YAML, source="r.yaml", environ=registry_environ())
    settings = Settings.from_environ(
        {"GATEWAY_DATABASE_URL": "sqlite+aiosqlite:///x.db", "GATEWAY_PUBLIC_URL": "http://gw.example.com"}
    )
    assert len(unsafe_settings(settings, registry)) == 2
    keys = msgspec.structs.replace(settings, allow_unsafe=frozenset({"example-keys"}))
    assert ["GATEWAY_PUBLIC_URL is plain http" in r for r in unsafe_settings(keys, registry)] == [True]
    http = msgspec.structs.replace(settings, allow_unsafe=frozenset({"http-public-url"}))
    assert ["public demo key" in r for r in unsafe_settings(http, registry)] == [True]


def test_serve_starts_once_told_by_flags(tmp_path: Path) -> None:
    port = free_port()
    env = (
        given(tmp_path)
        | EXAMPLE_ENV
        | {"GATEWAY_CONFIG": str(EXAMPLE), "GATEWAY_PUBLIC_URL": "http://gw.example.com"}
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")} | env
    flags = ["--allow-unsafe", "example-keys", "--allow-unsafe", "http-public-url"]
    server = Process(["serve", "--port", str(port), *flags], env, tmp_path / "gateway.log")
    try:
        wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200,
            what="the gateway started with its overrides",
        )
    finally:
        assert server.stop(signal.SIGTERM) == 0, server.output()
    assert (tmp_path / "state.db").exists()

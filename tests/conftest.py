"""Shared fixtures: registries with known secrets, databases (SQLite and the local PostgreSQL), the app.

PostgreSQL is the server on this machine (``GATEWAY_TEST_POSTGRES``, default
``postgresql+asyncpg://postgres@127.0.0.1:5432``); the suite creates its own database and drops it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from gateway.crypto import MessageCrypto, SecretBox
from gateway.http.app import create_app
from gateway.registry.model import Registry, parse_registry
from gateway.settings import Settings
from gateway.store import Store, create_engine, upgrade

pytest_plugins = ["tests.support.world"]

POSTGRES_SERVER = os.environ.get("GATEWAY_TEST_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432")

# Known secrets of the test registry: tests encrypt pushes with them, as WeChat would.
PLATFORM_SECRETS = {
    "retail": {
        "appid": "wxc0mp000000001",
        "secret": "retail-appsecret-0001",
        "token": "retailtoken",
        "aes_key": "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
    },
    "finance": {
        "appid": "wxc0mp000000002",
        "secret": "finance-appsecret-0002",
        "token": "financetoken",
        "aes_key": "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR",
    },
}

# Client keys of the test registry, by client id.
CLIENT_KEYS = {
    "crm": "crm-test-key",
    "limited": "limited-test-key",
    "audit": "audit-test-key",
    "ops": "ops-test-key",
    "onboarding": "onboarding-test-key",
}


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


REGISTRY_YAML = f"""
group: {{name: Test Group, open_appid: wx0pen0000000001}}
wechat: {{api_base: "http://wechat.test"}}
platforms:
  - {{id: retail, name: Retail, component_appid: wxc0mp000000001,
     component_appsecret: "${{RETAIL_SECRET}}", token: "${{RETAIL_TOKEN}}",
     encoding_aes_key: "${{RETAIL_AES}}"}}
  - {{id: finance, name: Finance, component_appid: wxc0mp000000002,
     component_appsecret: "${{FINANCE_SECRET}}", token: "${{FINANCE_TOKEN}}",
     encoding_aes_key: "${{FINANCE_AES}}"}}
clients:
  - {{id: crm, key_sha256: "{_sha(CLIENT_KEYS["crm"])}", scopes: [token, proxy]}}
  - {{id: limited, key_sha256: "{_sha(CLIENT_KEYS["limited"])}", scopes: [token],
     authorizers: [wxa0000000000001]}}
  - {{id: audit, key_sha256: "{_sha(CLIENT_KEYS["audit"])}", scopes: [catalog]}}
  - {{id: ops, key_sha256: "{_sha(CLIENT_KEYS["ops"])}", scopes: [component, admin, catalog]}}
  - {{id: onboarding, key_sha256: "{_sha(CLIENT_KEYS["onboarding"])}", scopes: [onboard, bind]}}
"""


def registry_environ() -> dict[str, str]:
    """The environment that resolves REGISTRY_YAML."""
    env = {}
    for platform_id, values in PLATFORM_SECRETS.items():
        prefix = platform_id.upper()
        env[f"{prefix}_SECRET"] = values["secret"]
        env[f"{prefix}_TOKEN"] = values["token"]
        env[f"{prefix}_AES"] = values["aes_key"]
    return env


@pytest.fixture(autouse=True)
def process_logging() -> Iterator[None]:
    """The process's logging put back after each test: ``gateway.cli.main.main`` run in-process, or a
    test of ``configure_logging``, installs a handler on the root logger, and left there it would write
    later tests' lines to a capture stream pytest has closed."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    chatty = {name: logging.getLogger(name).level for name in ("httpx", "httpcore", "alembic")}
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)
        for name, chatty_level in chatty.items():
            logging.getLogger(name).setLevel(chatty_level)


@pytest.fixture
def registry() -> Registry:
    """A registry of two platforms whose secrets are PLATFORM_SECRETS."""
    return parse_registry(REGISTRY_YAML, source="test-registry.yaml", environ=registry_environ())


def wechat_crypto(platform_id: str) -> MessageCrypto:
    """The crypto WeChat uses towards ``platform_id`` (same token, key and component appid)."""
    values = PLATFORM_SECRETS[platform_id]
    return MessageCrypto(values["token"], values["aes_key"], values["appid"])


@pytest.fixture
def secret_box() -> SecretBox:
    """A fresh at-rest key."""
    return SecretBox(os.urandom(32))


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A database of our own on the local PostgreSQL server for this test session."""
    name = f"gateway_test_{uuid.uuid4().hex[:12]}"
    dsn = POSTGRES_SERVER.replace("postgresql+asyncpg://", "postgresql://")

    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(dsn + "/postgres")
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    # Its own thread and loop: the fixture may be first requested from inside a running test loop.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, admin(f'CREATE DATABASE "{name}"')).result()
        try:
            yield f"{POSTGRES_SERVER}/{name}"
        finally:
            pool.submit(asyncio.run, admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')).result()


async def _reset_postgres(url: str) -> None:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file, then the session's PostgreSQL database with a fresh schema."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    url: str = request.getfixturevalue("postgres_database")
    await _reset_postgres(url)
    return url


@pytest.fixture
async def store(database_url: str, secret_box: SecretBox) -> AsyncIterator[Store]:
    """The store on ``database_url``, migrated, with a fixed clock."""
    engine = create_engine(database_url)
    await upgrade(engine)
    store = Store(engine, secret_box, clock=lambda: 1_700_000_000.0)
    yield store
    await store.aclose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """An empty SQLite database, for tests where the dialect does not matter."""
    return f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"


def make_settings(database_url: str, box: SecretBox | None = None) -> Settings:
    """Settings for tests: the given database and a fresh secret key."""
    key = base64.b64encode(os.urandom(32)).decode()
    settings = Settings.from_environ({"GATEWAY_SECRET_KEY": key, "GATEWAY_DATABASE_URL": database_url})
    return settings if box is None else msgspec.structs.replace(settings, secret_keys=box)


@pytest.fixture
async def gateway(
    registry: Registry, sqlite_url: str, secret_box: SecretBox
) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    """The gateway app on SQLite, lifespan running, reached in-process."""
    app = create_app(make_settings(sqlite_url, secret_box), registry)
    async with AsyncTestClient(app=app) as client:
        yield client

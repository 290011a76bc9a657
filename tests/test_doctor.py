"""`gateway doctor`: each check's verdict on real SQLite and PostgreSQL databases and the local Redis, and
the command's lines, JSON and exit status."""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg
import msgspec
import pytest
from sqlalchemy import text

from gateway.crypto import SecretBox
from gateway.observability.doctor import Finding, examine
from gateway.registry.model import Registry, WechatSettings
from gateway.settings import Settings
from gateway.store import Store, create_engine, upgrade
from gateway.xml import ComponentVerifyTicket
from tests.conftest import POSTGRES_SERVER, REGISTRY_YAML, _reset_postgres, registry_environ
from tests.test_cli import gateway

REDIS = os.environ.get("GATEWAY_TEST_REDIS", "redis://127.0.0.1:6379")
KEY = SecretBox(os.urandom(32))


def settings_for(database_url: str, **values: str | None) -> Settings:
    """A production-like environment: every refused default given, an https public URL, Redis."""
    environ = {
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_PUBLIC_URL": "https://gw.example.com",
        "GATEWAY_REDIS_URL": REDIS,
    }
    environ |= {name: value for name, value in values.items() if value is not None}
    for name in [name for name, value in values.items() if value is None]:
        environ.pop(name, None)
    return msgspec.structs.replace(Settings.from_environ(environ), secret_keys=KEY)


def production(registry: Registry) -> Registry:
    return msgspec.structs.replace(registry, wechat=WechatSettings())


def by_check(findings: list[Finding]) -> dict[str, Finding]:
    return {finding.check: finding for finding in findings}


async def seed(
    database_url: str,
    *,
    ticket_age_s: float | None = 60,
    token_left_s: float | None = 3600,
    box: SecretBox = KEY,
) -> None:
    """The schema, and for each test platform a ticket and a component token of the given ages."""
    engine = create_engine(database_url)
    await upgrade(engine)
    now = time.time()
    for platform in ("retail", "finance"):
        if ticket_age_s is not None:
            at = Store(engine, box, clock=lambda: now - ticket_age_s)
            ticket = ComponentVerifyTicket("wxc0mp000000001", int(now), f"ticket@@@{platform}")
            assert await at.record_push(platform, "s" * 40, f"n-{platform}", ticket)
        if token_left_s is not None:
            store = Store(engine, box)
            key = f"component:{platform}"
            assert await store.credentials.try_lease(key, "seeder", 30)
            assert await store.credentials.save(
                key, "seeder", "token", expires_at=now + token_left_s, renew_after=now + token_left_s - 600
            )
    await engine.dispose()


async def test_a_ready_deployment_passes_every_check(database_url: str, registry: Registry) -> None:
    await seed(database_url)
    findings = await examine(settings_for(database_url), production(registry))
    assert [f for f in findings if f.verdict != "ok"] == []
    checks = by_check(findings)
    assert {"database", "schema", "database rights", "clock", "secret key", "sealed values", "redis"} <= set(
        checks
    )
    assert checks["ticket retail"].detail.startswith("last verify ticket")
    assert "valid for" in checks["component token finance"].detail
    assert checks["sealed values"].detail == "4 stored values open with the key"
    assert "https://gw.example.com/wechat/retail/events" in checks["console retail"].detail
    assert "授权发起页域名 gw.example.com;" in checks["console retail"].detail


async def test_the_schema_behind_ahead_or_missing(database_url: str, registry: Registry) -> None:
    settings = settings_for(database_url)
    checks = by_check(await examine(settings, registry))
    assert (checks["schema"].verdict, checks["schema"].fix) == ("fail", "run `gateway db upgrade`")
    assert "ticket retail" not in checks  # nothing to read before the schema
    engine = create_engine(database_url)
    await upgrade(engine, "0012")
    schema = by_check(await examine(settings, registry))["schema"]
    assert (schema.verdict, schema.fix) == ("fail", "run `gateway db upgrade`")
    assert "at revision 0012, behind this release's head" in schema.detail
    await upgrade(engine)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '0999'"))
    await engine.dispose()
    schema = by_check(await examine(settings, registry))["schema"]
    assert schema.verdict == "warn"
    assert "0999, which this release does not know" in schema.detail
    assert "without migrating it, as after a rollback" in (schema.fix or "")


@pytest.mark.parametrize(
    ("ticket_age_s", "verdict"), [(None, "fail"), (11 * 60, "ok"), (30 * 60, "warn"), (13 * 3600, "fail")]
)
async def test_ticket_arrival(
    sqlite_url: str, registry: Registry, ticket_age_s: float | None, verdict: str
) -> None:
    await seed(sqlite_url, ticket_age_s=ticket_age_s)
    ticket = by_check(await examine(settings_for(sqlite_url), registry))["ticket retail"]
    assert ticket.verdict == verdict, ticket
    if verdict != "ok":
        assert "授权事件接收URL https://gw.example.com/wechat/retail/events" in (ticket.fix or "")


@pytest.mark.parametrize(
    ("token_left_s", "verdict"), [(None, "warn"), (100, "warn"), (-10, "warn"), (3000, "ok")]
)
async def test_component_token(
    sqlite_url: str, registry: Registry, token_left_s: float | None, verdict: str
) -> None:
    await seed(sqlite_url, token_left_s=token_left_s)
    token = by_check(await examine(settings_for(sqlite_url), registry))["component token retail"]
    assert token.verdict == verdict, token


async def test_a_component_token_whose_renewal_failed_or_is_held(sqlite_url: str, registry: Registry) -> None:
    await seed(sqlite_url, token_left_s=-10)
    engine = create_engine(sqlite_url)
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE credentials SET problem = 'wechat_unavailable' WHERE key = 'component:retail'")
        )
        await conn.execute(
            text("UPDATE credentials SET blocked_until = :until WHERE key = 'component:finance'"),
            {"until": time.time() + 3600},
        )
    await engine.dispose()
    checks = by_check(await examine(settings_for(sqlite_url), registry))
    assert checks["component token retail"].verdict == "fail"
    assert "wechat_unavailable" in checks["component token retail"].detail
    assert checks["component token finance"].verdict == "fail"
    assert "45009" in checks["component token finance"].detail


async def test_the_secret_key(sqlite_url: str, registry: Registry) -> None:
    await seed(sqlite_url)
    checks = by_check(await examine(settings_for(sqlite_url), registry))
    assert checks["secret key"].verdict == "ok"
    assert checks["secret key"].detail == f"32 bytes, key id {KEY.key_id}"

    unset = msgspec.structs.replace(settings_for(sqlite_url), secret_keys=None)
    checks = by_check(await examine(unset, registry))
    assert (checks["secret key"].verdict, checks["secret key"].detail) == (
        "fail",
        "GATEWAY_SECRET_KEY is not set",
    )
    assert checks["ticket retail"].verdict == "ok"  # a receipt needs no key
    assert checks["component token retail"].verdict == "warn"

    weak = Settings.from_environ({"GATEWAY_SECRET_KEY": "A" * 43 + "=", "GATEWAY_DATABASE_URL": sqlite_url})
    assert by_check(await examine(weak, registry))["secret key"].verdict == "fail"

    other = msgspec.structs.replace(settings_for(sqlite_url), secret_keys=SecretBox(os.urandom(32)))
    checks = by_check(await examine(other, registry))
    assert checks["sealed values"].verdict == "fail"
    assert "GATEWAY_PREVIOUS_SECRET_KEYS" in checks["sealed values"].detail
    rotating = msgspec.structs.replace(
        settings_for(sqlite_url),
        secret_keys=SecretBox.from_base64(base64.b64encode(os.urandom(32)).decode(), previous=_base64(KEY)),
    )
    assert by_check(await examine(rotating, registry))["sealed values"].verdict == "ok"


def _base64(box: SecretBox) -> str:
    return base64.b64encode(box._key).decode()  # the test's own key, to hand a process


@pytest.mark.parametrize(("offset_s", "verdict"), [(0, "ok"), (5, "warn"), (-60, "fail")])
async def test_clock_skew_against_postgresql(
    postgres_database: str, registry: Registry, offset_s: float, verdict: str
) -> None:
    clock: Callable[[], float] = lambda: time.time() + offset_s  # noqa: E731
    findings = await examine(settings_for(postgres_database), registry, clock=clock)
    found = by_check(findings)["clock"]
    assert found.verdict == verdict, found
    if offset_s:
        assert f"{abs(offset_s):.0f}" in found.detail
        assert ("behind" if offset_s < 0 else "ahead of") in found.detail


async def test_clock_on_sqlite_is_this_machines(sqlite_url: str, registry: Registry) -> None:
    found = by_check(await examine(settings_for(sqlite_url), registry, clock=lambda: 0.0))["clock"]
    assert found.verdict == "ok"
    assert "SQLite" in found.detail


async def test_rights_on_a_read_only_sqlite_file(tmp_path: Path, registry: Registry) -> None:
    path = tmp_path / "gateway.db"
    await seed(f"sqlite+aiosqlite:///{path}")
    read_only = f"sqlite+aiosqlite:///file:{path}?mode=ro&uri=true"
    checks = by_check(await examine(settings_for(read_only), registry))
    assert checks["database"].verdict == "ok"
    assert checks["database rights"].verdict == "fail"
    assert "readonly" in checks["database rights"].detail.lower()


async def test_rights_of_a_postgresql_user_that_may_only_read(
    postgres_database: str, registry: Registry
) -> None:
    await _reset_postgres(postgres_database)
    await seed(postgres_database)
    role = f"gateway_reader_{uuid.uuid4().hex[:8]}"
    dsn = postgres_database.replace("postgresql+asyncpg://", "postgresql://")
    database = dsn.rsplit("/", 1)[1]
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN')
        await admin.execute(f'GRANT CONNECT ON DATABASE "{database}" TO "{role}"')
        await admin.execute(f'GRANT USAGE ON SCHEMA public TO "{role}"')
        await admin.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"')
        await admin.execute(f'REVOKE CREATE ON SCHEMA public FROM PUBLIC, "{role}"')
        reader = f"{POSTGRES_SERVER.replace('postgres@', f'{role}@')}/{database}"
        checks = by_check(await examine(settings_for(reader), registry))
        assert checks["database"].verdict == "ok"
        assert checks["schema"].verdict == "ok"
        assert checks["database rights"].verdict == "fail"
        assert "permission denied" in checks["database rights"].detail
        assert (
            by_check(await examine(settings_for(postgres_database), registry))["database rights"].verdict
            == "ok"
        )
    finally:
        await admin.execute(f'DROP OWNED BY "{role}"')
        await admin.execute(f'DROP ROLE "{role}"')
        await admin.close()


async def test_a_database_that_does_not_answer(registry: Registry) -> None:
    checks = by_check(
        await examine(settings_for("postgresql+asyncpg://postgres@127.0.0.1:1/gateway"), registry)
    )
    assert checks["database"].verdict == "fail"
    assert "ConnectionRefusedError" in checks["database"].detail
    assert "schema" not in checks


async def test_redis(sqlite_url: str, registry: Registry) -> None:
    assert by_check(await examine(settings_for(sqlite_url), registry))["redis"].verdict == "ok"
    down = by_check(
        await examine(settings_for(sqlite_url, GATEWAY_REDIS_URL="redis://:pw@127.0.0.1:1"), registry)
    )
    assert down["redis"].verdict == "fail"
    assert "pw" not in down["redis"].detail
    unset = by_check(await examine(settings_for(sqlite_url, GATEWAY_REDIS_URL=None), registry))["redis"]
    assert (unset.verdict, unset.detail) == ("ok", "not configured: rate limits are kept per process")


async def test_the_settings_serve_refuses(sqlite_url: str, registry: Registry, tmp_path: Path) -> None:
    quiet = by_check(
        await examine(settings_for(sqlite_url, GATEWAY_DATABASE_URL=None, GATEWAY_PUBLIC_URL=None), registry)
    )
    assert quiet["database url"].verdict == "fail"
    assert "GATEWAY_DATABASE_URL is not set" in quiet["database url"].detail
    assert quiet["public url"].verdict == "fail"
    assert "GATEWAY_PUBLIC_URL is not set" in quiet["public url"].detail

    plain = settings_for(sqlite_url, GATEWAY_PUBLIC_URL="http://gw.example.com")
    assert by_check(await examine(plain, registry))["public url"].verdict == "fail"
    allowed = settings_for(
        sqlite_url, GATEWAY_PUBLIC_URL="http://gw.example.com", GATEWAY_ALLOW_UNSAFE="http-public-url"
    )
    assert by_check(await examine(allowed, registry))["public url"].verdict == "warn"
    loopback = settings_for(sqlite_url, GATEWAY_PUBLIC_URL="http://127.0.0.1:8000")
    assert by_check(await examine(loopback, registry))["public url"].verdict == "warn"

    demo_keys = REGISTRY_YAML.replace(
        REGISTRY_YAML.split('key_sha256: "')[5].split('"')[0],
        "c7d3bcd76d31ed8b7760c96ee2c7b910402310b10ee17bf390c81f2574b119bc",  # demo-ops-key
    )
    from gateway.registry.model import parse_registry

    demo = parse_registry(demo_keys, source="r.yaml", environ=registry_environ())
    keys = by_check(await examine(settings_for(sqlite_url), demo))["client keys"]
    assert keys.verdict == "fail"
    assert keys.detail.startswith("onboarding: public demo keys")
    assert by_check(await examine(settings_for(sqlite_url), registry))["client keys"].verdict == "ok"
    api = by_check(await examine(settings_for(sqlite_url), registry))["wechat api"]
    assert (api.verdict, api.detail) == (
        "warn",
        "wechat.api_base is http://wechat.test, not WeChat (a simulator, a proxy?)",
    )
    assert (
        by_check(await examine(settings_for(sqlite_url), production(registry)))["wechat api"].verdict == "ok"
    )


async def test_a_registry_that_does_not_load(sqlite_url: str) -> None:
    findings = await examine(settings_for(sqlite_url), None, "r.yaml: clients[0].scopes: empty")
    registry = by_check(findings)["registry"]
    assert (registry.verdict, registry.detail) == ("fail", "r.yaml: clients[0].scopes: empty")
    assert not [f for f in findings if f.check.startswith(("ticket", "console"))]


async def test_the_command_prints_a_line_per_check_and_exits_1_on_a_failure(
    tmp_path: Path, registry: Registry
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    config = tmp_path / "registry.yaml"
    config.write_text(REGISTRY_YAML.replace('wechat: {api_base: "http://wechat.test"}', ""))
    await seed(database_url)
    env = registry_environ() | {
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_PUBLIC_URL": "https://gw.example.com",
        "GATEWAY_SECRET_KEY": _base64(KEY),
        "GATEWAY_CONFIG": str(config),
    }
    healthy = gateway("doctor", env=env)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    lines = healthy.stdout.splitlines()
    assert all(line.startswith("ok ") for line in lines), lines
    assert any(line.split()[1:3] == ["ticket", "retail"] for line in lines)

    env["GATEWAY_PUBLIC_URL"] = "http://gw.example.com"
    sick = gateway("doctor", "--json", env=env)
    assert sick.returncode == 1
    report = json.loads(sick.stdout)
    assert report["ok"] is False
    (public,) = [c for c in report["checks"] if c["check"] == "public url"]
    assert public["verdict"] == "fail"
    assert public["fix"] == "give GATEWAY_PUBLIC_URL the https:// address the load balancer serves"
    assert _base64(KEY) not in sick.stdout

    lines = gateway("doctor", env=env).stdout.splitlines()
    assert any(line.startswith("FAIL  public url") and " — give GATEWAY_PUBLIC_URL" in line for line in lines)

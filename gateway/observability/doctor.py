"""`gateway doctor`: what an operator would check by hand before and after a rollout, each with a verdict
and what to do about it — the settings `serve` refuses, the database (reachable, at this release's head,
writable, on time), the secret key, each platform's verify ticket and component token, Redis, and the
values WeChat's console must hold (docs/operations.md, "Pre-flight: gateway doctor")."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Literal

import msgspec
import redis.asyncio as redis
from sqlalchemy import Column, Integer, MetaData, Table, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.crypto import SecretBox
from gateway.errors import SealedSecretError
from gateway.observability.preflight import example_key_clients, is_loopback_url
from gateway.registry.model import Registry
from gateway.settings import DEFAULT_PUBLIC_URL, Settings
from gateway.store import Store, create_engine
from gateway.store.credentials import StoredCredential
from gateway.store.migrate import schema_status

__all__ = [
    "CLOCK_FAIL_S",
    "CLOCK_WARN_S",
    "TICKET_FRESH_S",
    "TICKET_LIFETIME_S",
    "Finding",
    "Verdict",
    "examine",
]

Verdict = Literal["ok", "warn", "fail"]

# WeChat pushes a verify ticket every 10 minutes: two minutes' grace before one counts as late.
TICKET_FRESH_S = 12 * 60
# A ticket older than this no longer obtains component tokens (wechat-protocol.md §2).
TICKET_LIFETIME_S = 12 * 3600
# The renewer renews component tokens 5–10 minutes ahead of expiry: one closer than this is overdue.
TOKEN_MARGIN_S = 300
# Leases (30 s by default) and expiry compare this machine's clock with rows other replicas wrote.
CLOCK_WARN_S = 2.0
CLOCK_FAIL_S = 10.0
WECHAT_HOSTS = ("https://api.weixin.qq.com", "https://api2.weixin.qq.com")
_TIMEOUT_S = 5.0
_READ_TABLES = "the user of GATEWAY_DATABASE_URL needs to read the gateway's tables"


class Finding(msgspec.Struct, frozen=True):
    """One check's verdict: what was found, and what to do when it is not ``ok``."""

    check: str
    verdict: Verdict
    detail: str
    fix: str | None = None


async def examine(
    settings: Settings,
    registry: Registry | None,
    registry_problem: str | None = None,
    *,
    clock: Callable[[], float] = time.time,
) -> list[Finding]:
    """Every check, in the order an operator reads them; ``registry`` None when it did not load
    (``registry_problem`` says why)."""
    findings = [*_settings_findings(settings, registry, registry_problem)]
    engine = create_engine(settings.database_url)
    try:
        findings += await _database_findings(settings, engine, registry, clock)
    finally:
        await engine.dispose()
    findings.append(await _redis_finding(settings))
    if registry is not None:
        findings += _console_findings(settings, registry)
    return findings


def _settings_findings(
    settings: Settings, registry: Registry | None, registry_problem: str | None
) -> list[Finding]:
    findings = []
    if "GATEWAY_DATABASE_URL" in settings.defaulted:
        findings.append(
            Finding(
                "database url",
                "fail",
                "GATEWAY_DATABASE_URL is not set: serve would keep its state in ./gateway.db",
                "set GATEWAY_DATABASE_URL (postgresql+asyncpg://… for several replicas)",
            )
        )
    elif settings.database_url.startswith("sqlite"):
        findings.append(Finding("database url", "ok", "SQLite: for a single process only"))
    else:
        findings.append(Finding("database url", "ok", "PostgreSQL"))

    public_url = settings.public_url
    if "GATEWAY_PUBLIC_URL" in settings.defaulted:
        findings.append(
            Finding(
                "public url",
                "fail",
                f"GATEWAY_PUBLIC_URL is not set: WeChat and browsers would be sent to {DEFAULT_PUBLIC_URL}",
                "set GATEWAY_PUBLIC_URL to the gateway's public https:// address",
            )
        )
    elif public_url.startswith("https://"):
        findings.append(Finding("public url", "ok", public_url))
    elif is_loopback_url(public_url):
        findings.append(
            Finding(
                "public url",
                "warn",
                f"{public_url}: only this machine reaches it, and the pages' cookie is not Secure",
                "fine for a trial; production needs the public https:// address",
            )
        )
    else:
        allowed = "http-public-url" in settings.allow_unsafe
        findings.append(
            Finding(
                "public url",
                "warn" if allowed else "fail",
                f"{public_url} is plain http"
                + (" (allowed by GATEWAY_ALLOW_UNSAFE)" if allowed else ": serve refuses it"),
                "give GATEWAY_PUBLIC_URL the https:// address the load balancer serves",
            )
        )

    if registry is None:
        findings.append(
            Finding("registry", "fail", registry_problem or "not loaded", "fix the file it names")
        )
        return findings
    findings.append(
        Finding(
            "registry",
            "ok",
            f"{settings.config_path}: {len(registry.platforms)} platforms, {len(registry.clients)} clients",
        )
    )
    demo = example_key_clients(registry)
    if demo:
        allowed = "example-keys" in settings.allow_unsafe
        findings.append(
            Finding(
                "client keys",
                "warn" if allowed else "fail",
                f"{', '.join(demo)}: public demo keys of config/registry.example.yaml"
                + (" (allowed by GATEWAY_ALLOW_UNSAFE)" if allowed else ": serve refuses them"),
                "give each a key_sha256 from `gateway new-client-key`",
            )
        )
    else:
        findings.append(Finding("client keys", "ok", "no client holds a public demo key"))
    api_base = registry.wechat.api_base.rstrip("/")
    if api_base in WECHAT_HOSTS:
        findings.append(Finding("wechat api", "ok", api_base))
    else:
        findings.append(
            Finding(
                "wechat api",
                "warn",
                f"wechat.api_base is {api_base}, not WeChat (a simulator, a proxy?)",
                f"production calls {WECHAT_HOSTS[0]} (omit the registry's `wechat` section)",
            )
        )
    return findings


async def _database_findings(
    settings: Settings, engine: AsyncEngine, registry: Registry | None, clock: Callable[[], float]
) -> list[Finding]:
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except (OSError, DBAPIError) as exc:
        return [
            Finding(
                "database",
                "fail",
                f"does not answer: {_reason(exc)}",
                "check GATEWAY_DATABASE_URL, the server and the network (the checks that read it were "
                "skipped)",
            )
        ]
    dialect = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}.get(engine.dialect.name, engine.dialect.name)
    findings = [Finding("database", "ok", f"{dialect} answers")]
    try:
        status = await schema_status(engine)
    except DBAPIError as exc:
        findings.append(Finding("schema", "fail", f"cannot be read: {_reason(exc)}", _READ_TABLES))
        return findings
    if status.state == "at_head":
        findings.append(Finding("schema", "ok", status.describe()))
    elif status.state == "ahead":
        findings.append(
            Finding(
                "schema",
                "warn",
                status.describe(),
                "this release serves it without migrating it, as after a rollback (docs/operations.md, "
                "Upgrades and rollbacks); the release that migrated it checks it fully",
            )
        )
    else:
        findings.append(Finding("schema", "fail", status.describe(), "run `gateway db upgrade`"))
    findings.append(await _rights_finding(engine))
    findings.append(await _clock_finding(engine, clock))
    findings.append(_key_finding(settings.secret_keys))
    if status.state in ("empty", "behind") or registry is None:
        return findings
    # Without a key nothing opens; a throwaway one still reads what needs no opening (ticket receipts).
    box = settings.secret_keys or SecretBox(os.urandom(32))
    store = Store(engine, box, clock=clock)
    try:
        findings += await _credential_findings(
            store, registry, settings.public_url, settings.secret_keys is not None, clock()
        )
    except DBAPIError as exc:
        findings.append(Finding("credentials", "fail", f"cannot be read: {_reason(exc)}", _READ_TABLES))
    return findings


async def _rights_finding(engine: AsyncEngine) -> Finding:
    """Migrations create tables and serving writes rows: a probe table is created, written and dropped,
    and a gateway table written in a transaction that is rolled back."""
    name = f"gateway_doctor_{uuid.uuid4().hex[:12]}"
    probe = Table(name, MetaData(), Column("id", Integer, primary_key=True))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(probe.create)
            await conn.execute(probe.insert().values(id=1))
            await conn.run_sync(probe.drop)
        async with engine.connect() as conn:
            has_schema = await conn.run_sync(lambda sync: sync.dialect.has_table(sync, "alembic_version"))
            if has_schema:
                await conn.execute(text("UPDATE alembic_version SET version_num = version_num"))
            await conn.rollback()
    except DBAPIError as exc:
        return Finding(
            "database rights",
            "fail",
            f"cannot create a table or write: {_reason(exc)}",
            "the user of GATEWAY_DATABASE_URL needs to create tables (migrations) and write rows",
        )
    return Finding("database rights", "ok", "creates tables and writes rows")


async def _clock_finding(engine: AsyncEngine, clock: Callable[[], float]) -> Finding:
    if engine.dialect.name != "postgresql":
        return Finding("clock", "ok", "SQLite: the database keeps this machine's time")
    async with engine.connect() as conn:
        before = clock()
        answer = await conn.execute(text("SELECT extract(epoch FROM clock_timestamp())"))
        server = float(answer.scalar_one())
        after = clock()
    skew = server - (before + after) / 2
    detail = f"{abs(skew):.1f} s {'behind' if skew > 0 else 'ahead of'} the database server's clock"
    fix = "synchronise both clocks with NTP (pushes, leases and expiry compare them)"
    if abs(skew) > CLOCK_FAIL_S:
        return Finding("clock", "fail", detail, fix)
    if abs(skew) > CLOCK_WARN_S:
        return Finding("clock", "warn", detail, fix)
    return Finding("clock", "ok", detail)


def _key_finding(box: SecretBox | None) -> Finding:
    if box is None:
        return Finding(
            "secret key",
            "fail",
            "GATEWAY_SECRET_KEY is not set",
            "give every replica the same 32 random bytes in base64",
        )
    if not box.looks_random():
        return Finding(
            "secret key",
            "fail",
            "GATEWAY_SECRET_KEY is not random (a placeholder or a test value)",
            "make one with `python3 -c 'import base64,os; print(base64.b64encode(os.urandom(32)).decode())'` "
            "and change it as docs/configuration.md, Key rotation, says",
        )
    return Finding("secret key", "ok", f"32 bytes, key id {box.key_id}")


async def _credential_findings(
    store: Store, registry: Registry, public_url: str, can_open: bool, now: float
) -> list[Finding]:
    findings = []
    receipts = await store.ticket_receipts()
    opened = unopened = 0
    for platform in registry.platforms:
        event_url = f"that WeChat's console has 授权事件接收URL {public_url}/wechat/{platform.id}/events"
        received_at = receipts.get(platform.id)
        name = f"ticket {platform.id}"
        if received_at is None:
            findings.append(
                Finding(name, "fail", "no component_verify_ticket received yet", f"check {event_url}")
            )
        else:
            age = max(0, int(now - received_at))
            if age <= TICKET_FRESH_S:
                findings.append(Finding(name, "ok", f"last verify ticket {age} s ago"))
            elif age < TICKET_LIFETIME_S:
                findings.append(
                    Finding(
                        name,
                        "warn",
                        f"last verify ticket {age} s ago (WeChat pushes one every 600 s)",
                        f"check {event_url}, and that a replica answers it",
                    )
                )
            else:
                findings.append(
                    Finding(
                        name,
                        "fail",
                        f"last verify ticket {age} s ago: too old to obtain component tokens",
                        f"check {event_url}",
                    )
                )
        name = f"component token {platform.id}"
        if not can_open:
            findings.append(Finding(name, "warn", "not checked: GATEWAY_SECRET_KEY is not set"))
            continue
        try:
            if received_at is not None:
                await store.ticket(platform.id)
                opened += 1
            token = await store.credentials.get(f"component:{platform.id}")
        except SealedSecretError:
            unopened += 1
            findings.append(Finding(name, "fail", "its stored values do not open with the keys given"))
            continue
        findings.append(_token_finding(name, token, now))
        opened += token is not None and token.value is not None
    if can_open:
        if unopened:
            findings.append(
                Finding(
                    "sealed values",
                    "fail",
                    f"{unopened} platform(s) hold values sealed under a key neither GATEWAY_SECRET_KEY nor "
                    "GATEWAY_PREVIOUS_SECRET_KEYS holds",
                    "give the key the replicas use (a rotation: the old one in GATEWAY_PREVIOUS_SECRET_KEYS)",
                )
            )
        elif opened:
            findings.append(Finding("sealed values", "ok", f"{opened} stored values open with the key"))
        else:
            findings.append(Finding("sealed values", "ok", "nothing stored yet to open"))
    return findings


def _token_finding(name: str, token: StoredCredential | None, now: float) -> Finding:
    if token is not None and token.blocked_until is not None and token.blocked_until > now:
        return Finding(
            name,
            "fail",
            f"renewals held for {int(token.blocked_until - now)} s (WeChat's quota, 45009)",
            "POST /v1/platforms/{id}/clear-quota, or wait for midnight Beijing time",
        )
    if token is not None and token.valid_at(now) and token.expires_at is not None:
        left = int(token.expires_at - now)
        if left < TOKEN_MARGIN_S:
            return Finding(
                name, "warn", f"expires in {left} s: its renewal is overdue", "is a replica serving?"
            )
        return Finding(name, "ok", f"valid for {left} s")
    problem = f" (last renewal: {token.problem})" if token is not None and token.problem else ""
    return Finding(
        name,
        "fail" if problem else "warn",
        f"none valid{problem}",
        "a serving replica fetches it once the platform has a ticket",
    )


async def _redis_finding(settings: Settings) -> Finding:
    if settings.redis_url is None:
        return Finding("redis", "ok", "not configured: rate limits are kept per process")
    client = redis.from_url(settings.redis_url, socket_timeout=_TIMEOUT_S, socket_connect_timeout=_TIMEOUT_S)
    try:
        await client.ping()
    except (redis.RedisError, OSError) as exc:
        return Finding(
            "redis",
            "fail",
            f"does not answer: {type(exc).__name__}",
            "check GATEWAY_REDIS_URL and the server (meanwhile each replica limits on its own)",
        )
    finally:
        await client.aclose()
    return Finding("redis", "ok", "answers")


def _console_findings(settings: Settings, registry: Registry) -> list[Finding]:
    """What WeChat's console must hold for each platform (docs/operations.md, "WeChat's console"): shown,
    since the gateway cannot read it back; a ticket arriving is the proof the event URL is right."""
    base = settings.public_url
    host = base.split("://", 1)[1].split("/", 1)[0].split(":", 1)[0]
    return [
        Finding(
            f"console {platform.id}",
            "ok",
            f"授权发起页域名 {host}; 授权事件接收URL {base}/wechat/{platform.id}/events; "
            f"消息与事件接收URL {base}/wechat/{platform.id}/messages/$APPID$",
        )
        for platform in registry.platforms
    ]


def _reason(exc: BaseException) -> str:
    reason = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(reason).strip().splitlines()
    return f"{type(reason).__name__}: {lines[0]}" if lines else type(reason).__name__

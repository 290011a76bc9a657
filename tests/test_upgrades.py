"""Upgrades and rollbacks (docs/operations.md): `gateway db current | check | history | upgrade |
downgrade` on SQLite and PostgreSQL, and `gateway serve --no-migrate`, which refuses a schema behind this
release and runs on a newer one (the previous release must run on the next schema)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
from sqlalchemy import text

from gateway.store import create_engine
from gateway.store.migrate import head_revision, history
from tests.support.servers import free_port
from tests.test_cli import gateway
from tests.test_e2e import Process, wait_for
from tests.test_serve_preflight import given, serve

HEAD = head_revision()
NEWER = "9999"  # a revision a later release made: unknown to this one


async def revision(database_url: str) -> str | None:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    finally:
        await engine.dispose()


async def set_revision(database_url: str, value: str) -> None:
    engine = create_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": value})
    await engine.dispose()


async def test_db_commands_walk_the_schema_up_and_down(database_url: str) -> None:
    env = {"GATEWAY_DATABASE_URL": database_url}
    current = gateway("db", "current", env=env)
    assert current.returncode == 0
    assert current.stdout.splitlines()[:2] == ["revision: none", f"head:     {HEAD} (this release)"]
    empty = gateway("db", "check", env=env)
    assert empty.returncode == 1
    assert "the database has no schema" in empty.stderr
    assert "run `gateway db upgrade`" in empty.stderr

    assert gateway("db", "upgrade", "0012", env=env).returncode == 0
    behind = gateway("db", "check", env=env)
    assert behind.returncode == 1
    assert "at revision 0012, behind this release's head" in behind.stderr
    assert "  to apply: 0013: " in behind.stderr

    up = gateway("db", "upgrade", env=env)
    assert (up.returncode, up.stdout) == (0, "database schema is up to date\n")
    at_head = gateway("db", "check", env=env)
    assert at_head.returncode == 0
    assert f"revision {HEAD}, this release's head" in at_head.stdout

    unconfirmed = gateway("db", "downgrade", "0012", env=env)
    assert unconfirmed.returncode == 2
    assert "undoes, dropping what they added and its data" in unconfirmed.stderr
    assert "  0013: " in unconfirmed.stderr
    assert "--yes" in unconfirmed.stderr
    assert await revision(database_url) == HEAD

    down = gateway("db", "downgrade", "0012", "--yes", env=env)
    assert down.returncode == 0, down.stderr
    assert f"downgraded from {HEAD} to 0012" in down.stdout
    assert await revision(database_url) == "0012"

    unknown = gateway("db", "downgrade", "0099", "--yes", env=env)
    assert unknown.returncode == 2
    assert "'0099' is not a revision of this release" in unknown.stderr
    assert gateway("db", "history", env=env).stdout.splitlines() == list(history())


async def test_a_database_a_newer_release_migrated(database_url: str) -> None:
    env = {"GATEWAY_DATABASE_URL": database_url}
    assert gateway("db", "upgrade", env=env).returncode == 0
    await set_revision(database_url, NEWER)
    check = gateway("db", "check", env=env)
    assert check.returncode == 3
    assert f"at revision {NEWER}, which this release does not know" in check.stderr
    assert "--no-migrate" in check.stderr
    up = gateway("db", "upgrade", env=env)
    assert up.returncode == 1
    assert "nothing done" in up.stderr
    down = gateway("db", "downgrade", "0012", "--yes", env=env)
    assert down.returncode == 2
    assert "only that release's `gateway db downgrade` can take it back" in down.stderr
    assert await revision(database_url) == NEWER


async def test_serve_without_migrating_refuses_a_schema_behind_this_release(tmp_path: Path) -> None:
    env = given(tmp_path)
    database_url = env["GATEWAY_DATABASE_URL"]
    refused = serve(tmp_path, env, "--no-migrate")
    assert refused.returncode == 2
    assert "the database has no schema" in refused.stderr
    assert "run `gateway db upgrade` with this release first" in refused.stderr

    assert gateway("db", "upgrade", "0012", env={"GATEWAY_DATABASE_URL": database_url}).returncode == 0
    for how in (["--no-migrate"], []):
        refused = serve(tmp_path, env | ({} if how else {"GATEWAY_MIGRATE": "0"}), *how)
        assert refused.returncode == 2
        assert "at revision 0012, behind this release's head" in refused.stderr
        assert "GATEWAY_MIGRATE=0" in refused.stderr
    assert await revision(database_url) == "0012"


def _serving(tmp_path: Path, env: dict[str, str], *args: str) -> str:
    """Start serve, see it ready, stop it; its log."""
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    server = Process(["serve", "--port", str(port), *args], base | env, tmp_path / f"serve-{port}.log")
    try:
        wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200,
            what="serve ready",
        )
    finally:
        assert server.stop(signal.SIGTERM) == 0, server.output()
    return server.output()


async def test_serve_runs_on_this_releases_head_and_on_a_newer_schema(tmp_path: Path) -> None:
    env = given(tmp_path)
    database_url = env["GATEWAY_DATABASE_URL"]
    assert gateway("db", "upgrade", env={"GATEWAY_DATABASE_URL": database_url}).returncode == 0
    assert "does not know" not in _serving(tmp_path, env, "--no-migrate")

    await set_revision(database_url, NEWER)  # a newer release expanded the schema
    log = _serving(tmp_path, env, "--no-migrate")
    assert f"at revision {NEWER}, which this release does not know" in log
    assert "serving on it without migrating" in log
    # Rolled back without --no-migrate, it still starts, and leaves the newer schema alone.
    assert "not migrating it" in _serving(tmp_path, env)
    assert await revision(database_url) == NEWER

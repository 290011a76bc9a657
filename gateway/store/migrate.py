"""Schema migrations with alembic, run programmatically (`gateway db …`, and on start-up), and where a
database stands against this release's migrations.

Every migration keeps the previous release working (expand now, contract a release later:
docs/operations.md, "Upgrades and rollbacks"), so a database at a revision this release does not know —
a newer release migrated it — is one this release runs on, and never tries to migrate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util.exc import CommandError
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import ConfigError

__all__ = [
    "SchemaState",
    "SchemaStatus",
    "downgrade",
    "head_revision",
    "history",
    "schema_status",
    "undone_by_downgrade",
    "upgrade",
]

log = logging.getLogger(__name__)

_SCRIPTS = Path(__file__).with_name("migrations")
# Replicas starting together on PostgreSQL take turns: the first migrates, the others find it done.
_PG_LOCK_KEY = 0x6A7761794D6967  # arbitrary, constant

# empty: no schema at all; behind: a revision of this release's history short of its head; at_head;
# ahead: a revision this release does not know (a newer release's).
SchemaState = Literal["empty", "behind", "at_head", "ahead"]


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database stands: its revision (None on an empty database), this release's head, and
    the migrations between them that this release knows (oldest first, one line each)."""

    revision: str | None
    head: str
    state: SchemaState
    pending: tuple[str, ...] = ()

    def describe(self) -> str:
        """One sentence for an operator."""
        if self.state == "empty":
            return f"the database has no schema (this release's head is {self.head})"
        if self.state == "behind":
            return (
                f"the database is at revision {self.revision}, behind this release's head {self.head} "
                f"({len(self.pending)} migration{'s' if len(self.pending) != 1 else ''} to apply)"
            )
        if self.state == "ahead":
            return (
                f"the database is at revision {self.revision}, which this release does not know: "
                f"a newer release migrated it (this release's head is {self.head})"
            )
        return f"the database is at revision {self.revision}, this release's head"


def alembic_config(connection: Connection | None = None) -> Config:
    """An alembic Config pointing at the packaged migrations, sharing ``connection`` when given."""
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """This release's newest revision."""
    head = _scripts().get_current_head()
    assert head is not None  # one linear history, never empty
    return head


def _status(connection: Connection) -> SchemaStatus:
    scripts = _scripts()
    head = head_revision()
    revisions = MigrationContext.configure(connection).get_current_heads()
    if not revisions:
        return SchemaStatus(None, head, "empty", _lines(scripts, head, None))
    revision = revisions[0]
    if revision == head:
        return SchemaStatus(revision, head, "at_head")
    known = {script.revision for script in scripts.walk_revisions()}
    if revision not in known:
        return SchemaStatus(revision, head, "ahead")
    return SchemaStatus(revision, head, "behind", _lines(scripts, head, revision))


def _lines(scripts: ScriptDirectory, upper: str, lower: str | None) -> tuple[str, ...]:
    """The migrations after ``lower`` up to ``upper``, oldest first, as ``REV: first docstring line``."""
    steps = list(scripts.iterate_revisions(upper, lower or "base"))
    return tuple(
        f"{step.revision}: {(step.doc or '').strip().splitlines()[0] if step.doc else ''}".rstrip(": ")
        for step in reversed(steps)
    )


async def schema_status(engine: AsyncEngine) -> SchemaStatus:
    """Where the database of ``engine`` stands against this release's migrations; reads only."""
    async with engine.connect() as conn:
        return await conn.run_sync(_status)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> SchemaStatus:
    """Bring the database schema up to ``revision`` and say where it stands after. A database already
    past this release (``ahead``) is left as it is, with a warning: this release runs on it."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        before = await conn.run_sync(_status)
        if before.state == "ahead":
            log.warning("%s; not migrating it (docs/operations.md: rollbacks)", before.describe())
            return before
        try:
            await conn.run_sync(lambda sync_conn: command.upgrade(alembic_config(sync_conn), revision))
        except CommandError as exc:
            raise ConfigError(f"cannot upgrade to {revision!r}: {exc}") from None
        return await conn.run_sync(_status)


async def downgrade(engine: AsyncEngine, revision: str) -> SchemaStatus:
    """Take the database schema back to ``revision`` (``base``: nothing left) and say where it stands
    after. What the undone migrations added is dropped with its data."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        before = await conn.run_sync(_status)
        if before.state == "ahead":
            raise ConfigError(
                f"{before.describe()}; only that release's `gateway db downgrade` can take it back"
            )
        try:
            await conn.run_sync(lambda sync_conn: command.downgrade(alembic_config(sync_conn), revision))
        except CommandError as exc:
            raise ConfigError(f"cannot downgrade to {revision!r}: {exc}") from None
        return await conn.run_sync(_status)


def undone_by_downgrade(current: str | None, revision: str) -> tuple[str, ...]:
    """The migrations a downgrade from ``current`` to ``revision`` undoes, newest first; ConfigError when
    ``revision`` is not one of this release's revisions (or ``base``)."""
    scripts = _scripts()
    if revision != "base":
        try:
            scripts.get_revision(revision)
        except CommandError:
            raise ConfigError(
                f"{revision!r} is not a revision of this release (`gateway db history` lists them)"
            ) from None
    if current is None:
        return ()
    try:
        return tuple(reversed(_lines(scripts, current, None if revision == "base" else revision)))
    except (CommandError, RevisionError):
        raise ConfigError(
            f"{revision} is not older than the database's revision {current}: nothing to downgrade"
        ) from None


def history() -> tuple[str, ...]:
    """Every migration of this release, oldest first."""
    return _lines(_scripts(), head_revision(), None)

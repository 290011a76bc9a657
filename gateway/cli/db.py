"""``gateway db current | check | history | upgrade | downgrade``: where the schema stands and moving it,
with no registry or secret key needed. Exit codes (docs/operations.md, "Upgrades and rollbacks"): 0 done
or at head; 1 behind this release (``check``) or newer than it (``upgrade``); 2 refused (no ``--yes``,
an unknown revision, a database that cannot be reached); 3 newer than this release (``check``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.cli.shared import Commands, in_event_loop
from gateway.errors import ConfigError
from gateway.settings import Settings
from gateway.store import create_engine
from gateway.store.migrate import (
    SchemaStatus,
    downgrade,
    history,
    schema_status,
    undone_by_downgrade,
    upgrade,
)

__all__ = ["EXIT_AHEAD", "EXIT_NOT_AT_HEAD", "add_commands"]

EXIT_NOT_AT_HEAD = 1
EXIT_REFUSED = 2
EXIT_AHEAD = 3

T = TypeVar("T")


def add_commands(commands: Commands) -> None:
    """``db current``, ``db check``, ``db history``, ``db upgrade`` and ``db downgrade``."""
    database = commands.add_parser("db", help="database schema")
    database_commands = database.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    database_commands.add_parser(
        "current", help="print the revision of $GATEWAY_DATABASE_URL and this release's head"
    ).set_defaults(run=_db_current)
    database_commands.add_parser(
        "check",
        help="exit 0 when the database is at this release's head, 1 when behind (run `gateway db "
        "upgrade`), 3 when a newer release migrated it",
    ).set_defaults(run=_db_check)
    database_commands.add_parser("history", help="list this release's migrations, oldest first").set_defaults(
        run=_db_history
    )
    upgrading = database_commands.add_parser("upgrade", help="apply migrations to $GATEWAY_DATABASE_URL")
    upgrading.add_argument("revision", nargs="?", default="head", help="how far (default: head)")
    upgrading.set_defaults(run=_db_upgrade)
    downgrading = database_commands.add_parser(
        "downgrade",
        help="undo migrations down to REVISION (base: all); drops what they added, data included",
    )
    downgrading.add_argument("revision", help="the revision to leave the database at (`db history`)")
    downgrading.add_argument(
        "--yes", action="store_true", help="do it (without: print what would be undone, exit 2)"
    )
    downgrading.set_defaults(run=_db_downgrade)


def _on_database(operation: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    database_url = Settings.from_environ().database_url

    async def run() -> T:
        engine = create_engine(database_url)
        try:
            return await operation(engine)
        except (OSError, DBAPIError) as exc:
            reason = exc.orig if isinstance(exc, DBAPIError) else exc
            first_line = str(reason).strip().splitlines()[0] if str(reason).strip() else ""
            raise ConfigError(
                f"cannot reach the database of GATEWAY_DATABASE_URL: {type(reason).__name__}: {first_line}"
            ) from None
        finally:
            await engine.dispose()

    return in_event_loop(run)


def _db_current(_: argparse.Namespace) -> int:
    status = _on_database(schema_status)
    print(f"revision: {status.revision or 'none'}")
    print(f"head:     {status.head} (this release)")
    print(status.describe())
    return 0


def _db_check(_: argparse.Namespace) -> int:
    status = _on_database(schema_status)
    if status.state == "at_head":
        print(status.describe())
        return 0
    print(f"gateway: {status.describe()}", file=sys.stderr)
    if status.state == "ahead":
        print(
            "gateway: this release runs on it without migrating (`gateway serve --no-migrate`); only a "
            "release that knows it can check or migrate it",
            file=sys.stderr,
        )
        return EXIT_AHEAD
    for line in status.pending if status.state == "behind" else ():
        print(f"  to apply: {line}", file=sys.stderr)
    print("gateway: run `gateway db upgrade`", file=sys.stderr)
    return EXIT_NOT_AT_HEAD


def _db_history(_: argparse.Namespace) -> int:
    for line in history():
        print(line)
    return 0


def _db_upgrade(args: argparse.Namespace) -> int:
    revision: str = args.revision
    status = _on_database(lambda engine: upgrade(engine, revision))
    if status.state == "ahead":
        print(f"gateway: {status.describe()}; nothing done", file=sys.stderr)
        return EXIT_NOT_AT_HEAD
    if status.state == "at_head":
        print("database schema is up to date")
    else:
        print(status.describe())
    return 0


def _db_downgrade(args: argparse.Namespace) -> int:
    revision: str = args.revision
    before = _on_database(schema_status)
    if before.state == "ahead":
        raise ConfigError(f"{before.describe()}; only that release's `gateway db downgrade` can take it back")
    undone = undone_by_downgrade(before.revision, revision)
    if not undone:
        print(f"the database is at {before.revision or 'no revision'}: nothing to undo")
        return 0
    if not args.yes:
        print(
            f"gateway: downgrading from {before.revision} to {revision} undoes, dropping what they added "
            "and its data:",
            file=sys.stderr,
        )
        for line in undone:
            print(f"  {line}", file=sys.stderr)
        print("gateway: run again with --yes to do it (back the database up first)", file=sys.stderr)
        return EXIT_REFUSED
    after: SchemaStatus = _on_database(lambda engine: downgrade(engine, revision))
    print(f"database schema downgraded from {before.revision} to {after.revision or 'base (empty)'}")
    print(
        f"it suits the release whose head is {after.revision or 'base'}; a later release migrates it again "
        "when it starts (or refuses it with --no-migrate)"
    )
    return 0

"""``gateway db upgrade``: the schema brought up to date, with no registry or secret key needed."""

from __future__ import annotations

import argparse

from gateway.cli.shared import Commands, in_event_loop
from gateway.settings import Settings
from gateway.store import create_engine, upgrade

__all__ = ["add_commands"]


def add_commands(commands: Commands) -> None:
    """``db upgrade``."""
    database = commands.add_parser("db", help="database schema")
    database_commands = database.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    database_commands.add_parser("upgrade", help="apply migrations to $GATEWAY_DATABASE_URL").set_defaults(
        run=_db_upgrade
    )


def _db_upgrade(_: argparse.Namespace) -> int:
    database_url = Settings.from_environ().database_url

    async def run() -> None:
        engine = create_engine(database_url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    in_event_loop(run)
    print("database schema is up to date")
    return 0

"""``gateway db upgrade``: the schema brought up to date, with no registry or secret key needed."""

from __future__ import annotations

import argparse
import os

from gateway.cli.shared import Commands
from gateway.http.serving import run_event_loop
from gateway.settings import DEFAULT_DATABASE_URL
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
    async def run() -> None:
        engine = create_engine(os.environ.get("GATEWAY_DATABASE_URL", DEFAULT_DATABASE_URL))
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    run_event_loop(run())
    print("database schema is up to date")
    return 0

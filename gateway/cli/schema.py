"""``gateway schema registry``: the registry's JSON Schema, for editors and CI checks of the file."""

from __future__ import annotations

import argparse
import json

from gateway.cli.shared import Commands
from gateway.registry.schema import registry_json_schema

__all__ = ["add_commands", "registry_schema_text"]


def add_commands(commands: Commands) -> None:
    """``schema registry``."""
    schema = commands.add_parser("schema", help="JSON Schemas of the gateway's files")
    kinds = schema.add_subparsers(dest="schema", required=True, metavar="KIND")
    registry = kinds.add_parser("registry", help="print the registry file's JSON Schema")
    registry.set_defaults(run=_registry)


def registry_schema_text() -> str:
    """The schema as printed, and as docs/registry.schema.json holds it."""
    return json.dumps(registry_json_schema(), indent=2, ensure_ascii=False) + "\n"


def _registry(_: argparse.Namespace) -> int:
    print(registry_schema_text(), end="")
    return 0

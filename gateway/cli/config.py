"""``gateway check-config``: a registry file validated without starting anything."""

from __future__ import annotations

import argparse

from gateway.cli.shared import Commands, add_json_flag, print_json
from gateway.registry.model import load_registry

__all__ = ["add_commands"]


def add_commands(commands: Commands) -> None:
    """``check-config``."""
    check = commands.add_parser("check-config", help="validate a registry file (exit 0 valid, 2 not)")
    check.add_argument("file")
    add_json_flag(check, "the counts as one JSON object")
    check.set_defaults(run=_check_config)


def _check_config(args: argparse.Namespace) -> int:
    registry = load_registry(args.file)
    if args.json:
        print_json(
            {
                "file": args.file,
                "valid": True,
                "platforms": len(registry.platforms),
                "clients": len(registry.clients),
                "pins": len(registry.pins),
                "subscriptions": len(registry.subscriptions),
            }
        )
        return 0
    print(
        f"{args.file}: valid: {len(registry.platforms)} platforms, {len(registry.clients)} clients, "
        f"{len(registry.pins)} pins"
    )
    return 0

"""The ``gateway`` command line (SPEC §8): the parser assembled from the command modules, and dispatch."""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Sequence

from gateway.cli import (
    binding,
    catalog,
    config,
    db,
    deliveries,
    demo,
    doctor,
    keys,
    onboarding,
    schema,
    serve,
    simulate,
)
from gateway.errors import ConfigError
from gateway.observability.logs import configure_logging
from gateway.settings import Settings

__all__ = ["main", "version"]

EXIT_INVALID = 2
DISTRIBUTION = "group-gateway"  # the name pyproject.toml gives the package
# In the order `gateway --help` lists their commands.
_COMMAND_MODULES = (
    serve,
    demo,
    doctor,
    config,
    schema,
    db,
    binding,
    catalog,
    onboarding,
    deliveries,
    keys,
    simulate,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command named in ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    args = _parser().parse_args(argv)
    try:
        _configure_logging(args.command, Settings.from_environ())
        result: int = args.run(args)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        return 130
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="Group Gateway for WeChat components")
    parser.add_argument(
        "--version", action="version", version=f"gateway {version()}", help="print the version and exit"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _COMMAND_MODULES:
        module.add_commands(commands)
    return parser


def version() -> str:
    """The installed package's version, as its metadata says (pyproject.toml's ``version``)."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _configure_logging(command: str, settings: Settings) -> None:
    # JSON lines for `serve`, which runs under a log collector; readable lines for everything run at a
    # terminal (the demo, the one-off commands).
    default_format = "json" if command == "serve" else "text"
    configure_logging(settings.log_level, settings.log_format or default_format)


if __name__ == "__main__":
    sys.exit(main())

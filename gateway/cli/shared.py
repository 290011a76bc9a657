"""What the command modules share: their argument types, the ``--config`` and ``--json`` flags, one way to
print a table or its JSON, and one way to run an operation on the gateway's services."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TextIO, TypeAlias, TypeVar

import msgspec

from gateway.container import Services, build_services
from gateway.errors import Refused
from gateway.http.serving import run_event_loop
from gateway.registry.model import load_registry
from gateway.settings import DEFAULT_CONFIG, Settings

__all__ = [
    "Commands",
    "add_config_flag",
    "add_json_flag",
    "in_event_loop",
    "positive_int",
    "print_json",
    "print_table",
    "with_services",
]

T = TypeVar("T")

# The ``add_subparsers`` result a command module adds its commands to (a string: the class cannot be
# subscripted at run time, and only annotations read it).
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    """``--config``: the registry the command reads."""
    parser.add_argument("--config", help=f"the registry (default $GATEWAY_CONFIG or {DEFAULT_CONFIG})")


def add_json_flag(
    parser: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup,
    what: str = "the rows as a JSON list of objects",
) -> None:
    """``--json``: ``what`` as one JSON document on stdout instead of the table (``args.json``)."""
    parser.add_argument("--json", action="store_true", help=f"print {what} instead of the table")


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO | None = None) -> None:
    """``rows`` under ``header``, each column as wide as its widest cell, two spaces apart."""
    out = out or sys.stdout
    table = [tuple(header), *(tuple(row) for row in rows)]
    widths = [max(len(cells[i]) for cells in table) for i in range(len(header))]
    for cells in table:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip())
        out.write("\n")


def print_json(document: Any, out: TextIO | None = None) -> None:
    """``document`` (dicts, lists, msgspec Structs …) as one line of JSON: keys as the caller orders them,
    so a script may rely on them; secrets are the caller's to leave out, as the table leaves them out."""
    (out or sys.stdout).write(msgspec.json.encode(document).decode() + "\n")


def positive_int(text: str) -> int:
    """A whole number of at least 1, for argparse."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def in_event_loop(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``main()`` to its end on the event loop ``GATEWAY_EVENT_LOOP`` chooses."""
    return run_event_loop(main(), Settings.from_environ().event_loop)


def with_services(args: argparse.Namespace, run: Callable[[Services], Awaitable[int]]) -> int:
    """``run`` on the services of ``--config`` with the database migrated and the clients open, none of
    the workers (the serving replicas run those); a refusal printed, exit 1."""
    settings = Settings.from_environ(config_path=args.config)
    registry = load_registry(settings.config_path)

    async def main() -> int:
        async with build_services(settings, registry).running(background=False) as services:
            try:
                return await run(services)
            except Refused as exc:
                print(f"gateway: {exc.message}", file=sys.stderr)
                return 1

    return in_event_loop(main)

"""What the command modules share: their argument types, the ``--config`` flag, and one way to run an
operation on the gateway's services."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeAlias, TypeVar

from gateway.container import Services, build_services
from gateway.errors import Refused
from gateway.http.serving import run_event_loop
from gateway.registry.model import load_registry
from gateway.settings import DEFAULT_CONFIG, Settings

__all__ = ["Commands", "add_config_flag", "in_event_loop", "positive_int", "with_services"]

T = TypeVar("T")

# The ``add_subparsers`` result a command module adds its commands to (a string: the class cannot be
# subscripted at run time, and only annotations read it).
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    """``--config``: the registry the command reads."""
    parser.add_argument("--config", help=f"the registry (default $GATEWAY_CONFIG or {DEFAULT_CONFIG})")


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

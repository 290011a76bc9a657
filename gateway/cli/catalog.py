"""``gateway catalog sync``: the catalog brought up to date from WeChat, with progress and a summary."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import TextIO

import msgspec

from gateway.catalog.service import BINDINGS
from gateway.catalog.sync import DEFAULT_CONCURRENCY, SyncSummary
from gateway.cli.shared import (
    Commands,
    add_config_flag,
    add_json_flag,
    positive_int,
    print_json,
    with_services,
)
from gateway.container import Services

__all__ = ["Progress", "add_commands", "print_sync_summary", "progress_bars", "sync_summary_document"]

PROBLEMS_SHOWN = 50


def add_commands(commands: Commands) -> None:
    """``catalog sync``."""
    catalog = commands.add_parser("catalog", help="the catalog of every authorizer across every component")
    catalog_commands = catalog.add_subparsers(dest="catalog_command", required=True, metavar="ACTION")
    sync = catalog_commands.add_parser(
        "sync", help="bring the catalog up to date from WeChat (exit 0 with no failures, 1 with some)"
    )
    sync.add_argument("--platform", metavar="ID", help="only this platform (default: every one)")
    sync.add_argument(
        "--concurrency",
        type=positive_int,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"WeChat calls at a time (default {DEFAULT_CONCURRENCY})",
    )
    add_json_flag(sync, "the summary as one JSON object, with every problem")
    add_config_flag(sync)
    sync.set_defaults(run=_sync)


def _sync(args: argparse.Namespace) -> int:
    # One line per WeChat call and per token would bury the progress bar and the summary.
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        for chatty in ("gateway.wechat.client", "gateway.credentials.tokens"):
            logging.getLogger(chatty).setLevel(logging.WARNING)

    async def run(services: Services) -> int:
        summary = await services.catalog_sync.run(
            args.platform, concurrency=args.concurrency, track=progress_bars
        )
        if args.json:
            print_json(sync_summary_document(summary))
        else:
            print_sync_summary(summary)
        return 1 if summary.failures else 0

    return with_services(args, run)


class Progress:
    """A one-line progress bar on a terminal; silent when the output is not one."""

    def __init__(self, total: int, label: str, stream: TextIO = sys.stderr) -> None:
        self._total = total
        self._label = label
        self._stream = stream
        self._done = 0
        self._live = stream.isatty()

    def step(self) -> None:
        """One more item done."""
        self._done += 1
        if self._live:
            width = 30
            filled = width * self._done // max(self._total, 1)
            bar = "#" * filled + "." * (width - filled)
            self._stream.write(f"\r{self._label} [{bar}] {self._done}/{self._total}")
            if self._done == self._total:
                self._stream.write("\n")
            self._stream.flush()


def progress_bars(label: str, total: int) -> Callable[[], None]:
    """A progress bar per stage of a catalog sync (its ``Tracker``)."""
    return Progress(total, label).step


def sync_summary_document(summary: SyncSummary) -> dict[str, object]:
    """The summary for ``--json``: the table's counts under the summary's own field names, every binding
    state (0 when none), ``failures``, and every problem (the table shows the first ``PROBLEMS_SHOWN``)."""
    document = msgspec.structs.asdict(summary)
    document["bindings"] = {state: summary.bindings.get(state, 0) for state in BINDINGS}
    document["failures"] = summary.failures
    return document


def print_sync_summary(summary: SyncSummary, out: TextIO = sys.stdout) -> None:
    """The summary of a catalog sync as a table, then its problems (the first ``PROBLEMS_SHOWN``)."""
    rows = [
        ("authorizations", summary.authorizations),
        ("authorizers", summary.authorizers),
        ("new", summary.new),
        ("updated", summary.updated),
        ("revoked", summary.revoked),
        ("refresh tokens recovered", summary.refresh_tokens_recovered),
        ("reauthorization required", summary.reauthorization_required),
        *((f"binding {state}", summary.bindings.get(state, 0)) for state in BINDINGS),
        ("  of which have an open account", summary.bound_unidentified),
        ("binding kept (idle, read lately)", summary.bindings_kept),
        ("failures", summary.failures),
    ]
    out.write(f"{'platforms':<32} {', '.join(summary.platforms)}\n")
    for label, count in rows:
        out.write(f"{label:<32} {count:>8}\n")
    out.write(f"{'duration':<32} {summary.duration_s:>7.1f}s\n")
    if summary.problems:
        out.write("\nproblems:\n")
        for problem in summary.problems[:PROBLEMS_SHOWN]:
            out.write(
                f"  {problem.platform_id or '-'}  {problem.authorizer_appid or '-'}  {problem.problem}\n"
            )
        if summary.failures > PROBLEMS_SHOWN:
            out.write(f"  … and {summary.failures - PROBLEMS_SHOWN} more (the log has every one)\n")

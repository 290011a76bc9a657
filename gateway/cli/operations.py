"""Operations run from the command line against the same services the server uses."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TextIO

import msgspec

from gateway.binding.service import PassResult, PassRow
from gateway.catalog.service import BINDINGS, csv_line
from gateway.catalog.sync import SyncSummary
from gateway.http.app import Services, create_app
from gateway.registry.model import Registry
from gateway.settings import Settings

__all__ = [
    "Progress",
    "print_binding_pass",
    "print_console_list",
    "print_sync_summary",
    "progress_bars",
    "services_of",
]

PROBLEMS_SHOWN = 50


@asynccontextmanager
async def services_of(settings: Settings, registry: Registry) -> AsyncIterator[Services]:
    """The gateway's services with the database migrated and the upstream client open, no background
    tasks (the serving replicas run those)."""
    app = create_app(settings, registry, background=False)
    async with app.lifespan():
        services: Services = app.state.services
        yield services


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


ATTENTION_FREE = frozenset({"bound", "newly_bound", "created"})  # results that need nobody


def print_binding_pass(result: PassResult, out: TextIO = sys.stdout, *, as_json: bool = False) -> int:
    """A pass of ``gateway open-binding`` as a table per account (or JSON), a summary by result, and the
    accounts that need someone; returns how many do."""
    counts = Counter(row.result for row in result.rows)
    attention = [row for row in result.rows if row.result not in ATTENTION_FREE]
    if as_json:
        document = {
            "dry_run": result.dry_run,
            "accounts": [_pass_entry(row) for row in result.rows],
            "summary": dict(sorted(counts.items())),
        }
        out.write(msgspec.json.encode(document).decode() + "\n")
        return len(attention)
    header = ("appid", "principal", "bound to", "action", "target", "result")
    table = [header, *(_pass_cells(row) for row in result.rows)]
    widths = [max(len(cells[i]) for cells in table) for i in range(len(header))]
    for cells in table:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip())
        out.write("\n")
    out.write(f"\n{'result':<32} {'accounts':>8}\n")
    for state, count in sorted(counts.items()):
        out.write(f"{state:<32} {count:>8}\n")
    out.write(f"{'total':<32} {len(result.rows):>8}\n")
    if result.dry_run and any(row.step is not None and row.step.action != "nothing" for row in result.rows):
        out.write("\n(a plan: nothing was changed; `gateway open-binding ensure` carries it out)\n")
    if attention:
        out.write("\nneeds attention:\n")
        for row in attention:
            out.write(f"  {row.appid}  {row.result}  {row.words}\n")
    return len(attention)


def _pass_cells(row: PassRow) -> tuple[str, ...]:
    step = row.step
    if step is None:
        return (row.appid, "", "", "", "", row.result)
    target = step.target or (f"(made by {step.creator})" if step.creator else "")
    principal = step.principal or "?"
    if len(principal) > 40:
        principal = principal[:39] + "…"
    return (row.appid, principal, step.current or "-", step.action, target, row.result)


def _pass_entry(row: PassRow) -> dict[str, object]:
    step = row.step
    return {
        "appid": row.appid,
        "principal_name": None if step is None else step.principal,
        "open_appid": None if step is None else step.current,
        "action": None if step is None else step.action,
        "target": None if step is None else step.target,
        "created_by": None if step is None else step.creator,
        "state": None if step is None else step.state,
        "result": row.result,
        "reason": None if step is None else step.reason,
        "words": row.words,
    }


UNKNOWN_TARGET = "unknown (run `gateway open-binding check`)"
CONSOLE_COLUMNS = ("authorizer_appid", "name", "principal_name", "target_open_appid")


async def print_console_list(services: Services, out: TextIO = sys.stdout, *, as_csv: bool = False) -> int:
    """The accounts only the Open Platform console can bind (SPEC §11), with the open account to bind
    each to, as the last check, ensure or catalog sync recorded them; returns how many."""
    facts = await services.store.authorizations.binding_facts("console_binding_needed")
    # No target recorded: said so, never guessed here (the binding rules decide it in one place).
    rows = [(f.authorizer_appid, f.nick_name, f.principal_name, f.target or UNKNOWN_TARGET) for f in facts]
    if as_csv:
        out.write(csv_line(CONSOLE_COLUMNS).decode())
        for row in rows:
            out.write(csv_line(row).decode())
        return len(rows)
    if not rows:
        out.write("no account needs the Open Platform console\n")
        return 0
    widths = [max(len(r[i]) for r in (CONSOLE_COLUMNS, *rows)) for i in range(len(CONSOLE_COLUMNS))]
    for cells in (CONSOLE_COLUMNS, *rows):
        out.write("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip() + "\n")
    out.write(
        f"\n{len(rows)} account(s): bind each in the Open Platform console (管理中心 → 绑定) to its "
        "target; WeChat's API binds only accounts of the open account's own principal\n"
    )
    return len(rows)


def progress_bars(label: str, total: int) -> Callable[[], None]:
    """A progress bar per stage of a catalog sync (its ``Tracker``)."""
    return Progress(total, label).step


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

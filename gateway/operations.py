"""Operations run from the command line against the same services the server uses."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TextIO

from gateway.app import Services, create_app
from gateway.binding import OpenBinding
from gateway.catalog import BINDINGS
from gateway.catalog_sync import SyncSummary
from gateway.errors import ApiError
from gateway.registry import Registry
from gateway.settings import Settings

__all__ = ["Progress", "binding_pass", "print_sync_summary", "progress_bars", "services_of"]

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


async def binding_pass(
    services: Services,
    action: Callable[[str], Awaitable[OpenBinding]],
    *,
    concurrency: int = 8,
    out: TextIO = sys.stdout,
) -> int:
    """Run ``action`` (check or ensure) for every authorizer with a live authorization; print a summary
    table and every account that is not bound to the group's open account. Returns how many were not."""
    appids = sorted({a.authorizer_appid for a in await services.store.authorizations.active()})
    progress = Progress(len(appids), "open binding")
    gate = asyncio.Semaphore(concurrency)
    results: dict[str, str] = {}
    details: dict[str, str] = {}

    async def one(appid: str) -> None:
        async with gate:
            try:
                outcome = await action(appid)
                results[appid] = outcome.state
                details[appid] = outcome.open_appid or ""
            except ApiError as exc:
                results[appid] = exc.code
                details[appid] = exc.message
            progress.step()

    await asyncio.gather(*(one(appid) for appid in appids))
    counts = Counter(results.values())
    out.write(f"{'state':<32} {'accounts':>8}\n")
    for state, count in sorted(counts.items()):
        out.write(f"{state:<32} {count:>8}\n")
    out.write(f"{'total':<32} {len(appids):>8}\n")
    attention = [appid for appid in appids if results[appid] not in ("bound", "newly_bound")]
    if attention:
        out.write("\nneeds attention:\n")
        for appid in attention:
            out.write(f"  {appid}  {results[appid]}  {details[appid]}\n")
    return len(attention)


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

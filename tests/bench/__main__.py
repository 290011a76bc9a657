"""The benchmark suite: every benchmark in turn, then one table of all their figures.

    python -m tests.bench [--quick] [--only tokens,intake] [--skip catalog,storm] [--write-docs]

Each benchmark is ``suite(quick)`` of its module (see ``tests/bench/__init__.py``), run in this process
one after another; its own output goes by as when it runs alone. A benchmark that fails is reported and
the others still run; the exit status is 1 then. ``--quick`` runs each with fewer and shorter rounds and
smaller sizes: a smoke run of a few minutes whose figures are rougher than the defaults'.
``--write-docs`` puts the combined table and the machine it ran on into ``docs/benchmarks.md`` (between
``<!-- bench:results -->`` and ``<!-- /bench:results -->``) and draws ``docs/benchmarks.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from tests.bench._harness import ROOT, Kind, Row, machine, table_lines

# In the order they run: the short ones first, the longest (catalog: 100,000 accounts and a sync) last.
BENCHMARKS = ("tokens", "proxy", "forwarding", "intake", "storm", "idle_tokens", "memory", "catalog")
DOC = ROOT / "docs" / "benchmarks.md"
CHART = ROOT / "docs" / "benchmarks.png"

Suite = Callable[[bool], list[Row]]


@dataclass
class Outcome:
    """What one benchmark gave: its rows, or the error that stopped it."""

    name: str
    rows: list[Row]
    seconds: float
    load_before: float
    load_after: float
    error: str | None = None


def _catalog_suite(quick: bool) -> list[Row]:
    # tests/bench/catalog.py has no suite() of its own: its run() takes the arguments its main() parses.
    from tests.bench import catalog

    args = argparse.Namespace(
        authorizers=5_000 if quick else 100_000,
        rounds=1 if quick else 3,
        passes=1,
        depth=1 if quick else 3,
        connections=1,
        sync_authorizers=300 if quick else 10_000,
        concurrency=16,
        latency_ms=50.0,
        database_url=None,
        skip=set(),
        profile=None,
    )
    return catalog.run(args)


_WITHOUT_SUITE: dict[str, Suite] = {"catalog": _catalog_suite}


def suite_of(name: str) -> Suite:
    """The ``suite`` of ``tests.bench.NAME``, imported now (a missing module raises a clear error)."""
    module = importlib.import_module(f"tests.bench.{name}")
    found: Suite | None = getattr(module, "suite", None) or _WITHOUT_SUITE.get(name)
    if found is None:
        raise RuntimeError(f"tests/bench/{name}.py has no `def suite(quick: bool) -> list[Row]`")
    return found


def guess_kind(figure: str) -> Kind:
    """What a figure measures, from its words, for rows that do not say (the chart needs it)."""
    text = figure.lower()
    if "cpu" in text:
        return "cpu"
    if "/s" in text or "per second" in text or "throughput" in text:
        return "throughput"
    if "latency" in text or " ms" in text:
        return "latency"
    if "mb" in text or "rss" in text or "memory" in text:
        return "memory"
    if "second" in text or "wall" in text:
        return "time"
    return ""


def run_one(name: str, quick: bool) -> Outcome:
    print(f"\n===== {name} ({'quick' if quick else 'full'}) =====", flush=True)
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    try:
        rows = suite_of(name)(quick)
    except Exception:
        traceback.print_exc()
        error = traceback.format_exc(limit=1).strip().splitlines()[-1]
        return Outcome(name, [], time.monotonic() - started, load_before, os.getloadavg()[0], error)
    rows = [
        dataclasses.replace(row, bench=row.bench or name, kind=row.kind or guess_kind(row.figure))
        for row in rows
    ]
    return Outcome(name, rows, time.monotonic() - started, load_before, os.getloadavg()[0])


def duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def summary_lines(outcomes: Sequence[Outcome]) -> list[str]:
    """One line per benchmark: how long it took, the load average around it, and any error."""
    return [
        f"{o.name}: {duration(o.seconds)}, load average {o.load_before:.2f} → {o.load_after:.2f}"
        + (f"; FAILED: {o.error}" if o.error else "")
        for o in outcomes
    ]


def select(only: str, skip: str, parser: argparse.ArgumentParser) -> list[str]:
    def names(value: str) -> list[str]:
        chosen = [part.strip() for part in value.split(",") if part.strip()]
        unknown = [n for n in chosen if n not in BENCHMARKS]
        if unknown:
            parser.error(f"unknown benchmark {', '.join(unknown)}; they are: {', '.join(BENCHMARKS)}")
        return chosen

    chosen = names(only) if only else list(BENCHMARKS)
    skipped = set(names(skip))
    selected = [n for n in BENCHMARKS if n in chosen and n not in skipped]
    if not selected:
        parser.error("no benchmark left to run")
    missing = [n for n in selected if importlib.util.find_spec(f"tests.bench.{n}") is None]
    if missing:  # before anything runs, rather than after half an hour
        parser.error(
            f"tests/bench/{missing[0]}.py does not exist"
            + (f" (nor {', '.join(missing[1:])})" if missing[1:] else "")
            + f"; leave it out with --skip {','.join(missing)}"
        )
    return selected


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer, shorter rounds: a smoke run of a few minutes"
    )
    parser.add_argument(
        "--only", default="", help=f"run only these, comma-separated: {', '.join(BENCHMARKS)}"
    )
    parser.add_argument("--skip", default="", help="leave these out, comma-separated")
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help=f"write the results into {DOC.relative_to(ROOT)} and draw {CHART.relative_to(ROOT)}",
    )
    given = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(given)
    selected = select(args.only, args.skip, parser)
    if args.write_docs:
        from tests.bench import _report  # matplotlib: only needed to draw

        _report.check_doc(DOC)

    started_at = datetime.now().astimezone()
    before = machine()
    print(
        f"suite: {', '.join(selected)} ({'quick' if args.quick else 'full'}); machine: {before}", flush=True
    )
    outcomes = [run_one(name, args.quick) for name in selected]
    after = machine()
    rows = [row for outcome in outcomes for row in outcome.rows]

    print(f"\n===== the suite: {len(rows)} figures of {len(outcomes)} benchmarks =====")
    print(f"machine before: {before}")
    print(f"machine after:  {after}")
    for line in summary_lines(outcomes):
        print(line)
    print()
    for line in table_lines(rows, with_bench=True):
        print(line)
    if args.write_docs:
        from tests.bench import _report

        command = " ".join(["python -m tests.bench", *(a for a in given if a != "--write-docs")])
        _report.chart(rows, CHART, title=f"{command}, {started_at:%Y-%m-%d %H:%M}")
        _report.write_doc(
            DOC,
            _report.results_block(
                rows,
                command=command,
                started_at=started_at,
                machine_before=before,
                machine_after=after,
                summary=summary_lines(outcomes),
                chart=CHART.name,
            ),
        )
        print(f"\nwrote {DOC.relative_to(ROOT)} and {CHART.relative_to(ROOT)}")
    return 1 if any(o.error for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())

"""The suite of an earlier commit and of this checkout, one after the other in one run: one table.

    python -m tests.bench.before_after --before REV [--quick] [--only tokens,intake] [--skip memory]

Each benchmark prints ratios against a baseline it measures itself in the same run, so the two columns
compare like with like even on a shared machine; the load averages are printed with them. ``REV`` is
checked out (``git worktree``, detached) into a temporary directory with a virtualenv of its own, since
its dependencies may differ (the redesign's ``before`` used httpx-aiohttp); both suites run through
``python -m tests.bench``, which every commit since the suite's first keeps, and their final tables are
read back and joined by (benchmark, figure).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tests.bench._harness import ROOT

__all__ = ["main"]

_COLUMNS = re.compile(r"\s{2,}")


def _row(line: str) -> tuple[str, ...] | None:
    """bench, figure, ours, baseline, ratio, target, result ("" where a figure has no target)."""
    cells = _COLUMNS.split(line.strip())
    if len(cells) not in (5, 7):
        return None
    return (*cells, "", "") if len(cells) == 5 else tuple(cells)


def _suite(tree: Path, python: Path, args: Sequence[str]) -> tuple[list[tuple[str, ...]], list[str]]:
    """Run ``python -m tests.bench`` in ``tree``; its table rows and its machine lines."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    print(f"\n######## {tree} ########", flush=True)
    done = subprocess.run(
        [str(python), "-m", "tests.bench", *args], cwd=tree, env=env, text=True, capture_output=True
    )
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr[-4000:])
    lines = done.stdout.splitlines()
    try:
        start = max(i for i, line in enumerate(lines) if line.startswith("bench ") and "figure" in line)
    except ValueError:
        raise SystemExit(f"no results table from {tree} (exit {done.returncode})") from None
    rows = [row for line in lines[start + 2 :] if (row := _row(line)) is not None]
    suite = max(i for i, line in enumerate(lines) if line.startswith("===== the suite"))
    machine = [line for line in lines[suite:start] if line.startswith(("machine before", "machine after"))]
    return rows, machine


def _figure(bench: str, figure: str) -> tuple[str, str]:
    """The join key: the proxy's simulator rows were named by the client stack alone before they were
    measured against a second upstream."""
    return bench, figure.removeprefix("simulator · ")


def _checkout(rev: str, into: Path) -> tuple[Path, Path]:
    """``rev`` as a detached worktree in ``into``, with a virtualenv holding its own dependencies."""
    tree = into / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev], check=True)
    venv = into / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "-e", f"{tree}[dev,bench]"], check=True)
    return tree, venv / "bin" / "python"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.before_after",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--before", required=True, help="the earlier commit (any git revision)")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (passed on)")
    parser.add_argument("--only", default="", help="run only these, comma-separated (passed on)")
    parser.add_argument("--skip", default="", help="leave these out, comma-separated (passed on)")
    args = parser.parse_args(argv)
    passed = [*(["--quick"] if args.quick else []), *(["--only", args.only] if args.only else [])]
    passed += ["--skip", args.skip] if args.skip else []

    with tempfile.TemporaryDirectory(prefix="bench-before-") as scratch:
        tree, python = _checkout(args.before, Path(scratch))
        try:
            before, machine_before = _suite(tree, python, passed)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    after, machine_after = _suite(ROOT, Path(sys.executable), passed)

    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(f"\n===== before ({args.before}) and after ({head or 'this checkout'}), one run =====")
    for label, machine in (("before", machine_before), ("after", machine_after)):
        for line in machine:
            print(f"{label}: {line}")
    found = {_figure(r[0], r[1]): r for r in before}
    header = ("bench", "figure", "before ratio", "after ratio", "target", "before", "after")
    table = [header]
    for row in after:
        old = found.pop(_figure(row[0], row[1]), None)
        table.append((row[0], row[1], old[4] if old else "–", row[4], row[5], old[6] if old else "–", row[6]))
    table += [(r[0], r[1], r[4], "–", r[5], r[6], "–") for r in found.values()]  # gone since
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for i, line in enumerate(table):
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

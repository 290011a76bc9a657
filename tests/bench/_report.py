"""The suite's results for the documentation: a Markdown block in ``docs/benchmarks.md`` and a chart.

The block sits between the lines ``<!-- bench:results -->`` and ``<!-- /bench:results -->`` (each a line of
its own: the markers quoted in prose do not count) and is replaced whole by each ``python -m tests.bench
--write-docs``; where the markers are missing, it goes in a section of its own before the first ``## ``
heading. The chart (matplotlib, Agg) has one row of panels per benchmark:
throughput, latency, and CPU / memory / time, each figure's ours beside its baseline.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from tests.bench._harness import Row, table_lines

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["chart", "check_doc", "results_block", "write_doc"]

START = "<!-- bench:results -->"
END = "<!-- /bench:results -->"
SECTION = "## Latest suite run"
PANELS = (
    ("throughput", ("throughput",), "throughput (higher is better)"),
    ("latency", ("latency",), "latency (lower is better)"),
    ("other", ("cpu", "memory", "time"), "CPU, memory, time (lower is better)"),
)
OURS_COLOUR, BASELINE_COLOUR = "#2b6cb0", "#a0aec0"


def _markers(text: str) -> tuple[list[re.Match[str]], list[re.Match[str]]]:
    return (
        list(re.finditer(rf"^{re.escape(START)}$", text, re.MULTILINE)),
        list(re.finditer(rf"^{re.escape(END)}$", text, re.MULTILINE)),
    )


def check_doc(path: Path) -> None:
    """Raise unless ``path`` exists and holds the marker lines once each, in order, or neither."""
    starts, ends = _markers(path.read_text())
    if (len(starts), len(ends)) not in ((0, 0), (1, 1)) or (starts and starts[0].start() > ends[0].start()):
        raise SystemExit(f"{path}: expected the lines {START} … {END} once, in that order (or neither)")


def results_block(
    rows: Sequence[Row],
    *,
    command: str,
    started_at: datetime,
    machine_before: str,
    machine_after: str,
    summary: Sequence[str],
    chart: str,
) -> str:
    """The Markdown between (and with) the markers."""
    lines = [
        START,
        "<!-- Written by `python -m tests.bench --write-docs`: edit the code, not this block. -->",
        "",
        f"`{command}`, started {started_at:%Y-%m-%d %H:%M %z}."
        + (
            " Quick: fewer and shorter rounds and smaller sizes, so rougher figures."
            if "--quick" in command
            else ""
        ),
        "",
        f"- Machine before: {machine_before}.",
        f"- Machine after: {machine_after}.",
        *(f"- {line}." for line in summary),
        "",
        *table_lines(rows, with_bench=True, markdown=True),
        "",
        f"![Each benchmark's figures, ours beside its baseline]({chart})",
        END,
    ]
    return "\n".join(lines)


def write_doc(path: Path, block: str) -> None:
    """Replace the block between the markers in ``path``, or add it in a section before the first ``## ``."""
    text = path.read_text()
    starts, ends = _markers(text)
    if starts:
        text = text[: starts[0].start()] + block + text[ends[0].end() :]
    else:
        at = text.find("\n## ")
        at = len(text) if at < 0 else at + 1
        text = text[:at] + f"{SECTION}\n\n{block}\n\n" + text[at:]
    path.write_text(text)


def _value(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}"


def _label(row: Row) -> str:
    figure = textwrap.fill(row.figure, 34)
    judged = f"ratio {row.ratio:.2f}" if not row.added else f"added {row.ours - row.baseline:+.2f}"
    target = f", target {row.target_text}: {row.verdict}" if row.target is not None else ""
    return f"{figure}\n{judged}{target}"


def chart(rows: Sequence[Row], out: Path, *, title: str) -> None:
    """Small multiples, a PNG at ``out``: a row of panels per benchmark and a column per kind of figure,
    each figure on an axis of its own (its units), ours above its baseline, the value ours must reach
    for the target dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = list(dict.fromkeys(r.bench for r in rows))
    grid = {
        bench: [[r for r in rows if r.bench == bench and r.kind in kinds] for _, kinds, _ in PANELS]
        for bench in benches
    }
    grid = {bench: panels for bench, panels in grid.items() if any(panels)}
    if not grid:
        return
    heights = [max(len(figures) for figures in panels) for panels in grid.values()]
    inches = sum(heights) * 1.0 + len(grid) * 0.7 + 0.6
    fig = plt.figure(figsize=(17, inches))
    outer = fig.add_gridspec(
        len(grid),
        len(PANELS),
        height_ratios=heights,
        hspace=0.9 / (sum(heights) / len(heights)),  # about 0.9 in between benchmarks
        wspace=0.9,
        top=1 - 0.8 / inches,  # room for the title and the legend, and no more
        bottom=0.3 / inches,
    )
    for i, (bench, panels) in enumerate(grid.items()):
        for j, figures in enumerate(panels):
            if not figures:
                continue
            cells = outer[i, j].subgridspec(heights[i], 1, hspace=0.7)
            for k, row in enumerate(figures):
                ax = fig.add_subplot(cells[k])
                _figure(ax, row)
                if k == 0:
                    ax.set_title(f"{bench}: {PANELS[j][2]}", fontsize=10, loc="left")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in (OURS_COLOUR, BASELINE_COLOUR)]
    handles.append(plt.Line2D([0], [0], color="black", linestyle="--", linewidth=1))
    fig.legend(
        handles,
        ["ours", "baseline", "target"],
        loc="upper right",
        bbox_to_anchor=(0.99, 1 - 0.15 / inches),
        ncols=3,
        frameon=False,
    )
    fig.suptitle(title, x=0.01, y=1 - 0.2 / inches, ha="left", va="top", fontsize=12)
    fig.savefig(out, dpi=90, bbox_inches="tight")
    plt.close(fig)


def _figure(ax: Axes, row: Row) -> None:
    """One figure: two bars on an axis of its own, labelled with its name, ratio and verdict."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.barh([0, 1], [row.ours, row.baseline], height=0.8, color=[OURS_COLOUR, BASELINE_COLOUR])
    for y, value in ((0, row.ours), (1, row.baseline)):
        ax.text(max(value, 0), y, f" {_value(value)}", va="center", fontsize=8)
    marks = [row.ours, row.baseline]
    if row.target is not None:  # what ours must reach (or stay under)
        need = row.baseline + row.target if row.added else row.baseline * row.target
        ax.axvline(need, ymin=0.5, ymax=1, color="black", linestyle="--", linewidth=1)
        marks.append(need)
    low, high = min([*marks, 0.0]), max([*marks, 0.0])
    ax.set_xlim(low * 1.3, high * 1.35 if high > 0 else 1)
    ax.set_ylim(1.6, -0.6)  # ours on top
    ax.set_yticks([])
    colour = {"pass": "#276749", "FAIL": "#c53030"}.get(row.verdict, "black")
    ax.set_ylabel(_label(row), rotation=0, ha="right", va="center", fontsize=8, color=colour)
    ax.tick_params(axis="x", labelsize=7)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: _value(value)))
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)

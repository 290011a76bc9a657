"""What every benchmark needs: server processes on loopback, a load generator process, medians, a table.

The load comes from ``wrk`` when it is installed (one thread: the servers get the other core), else from
``python -m tests.bench._load``. Either way it is another process, bounded in connections and time.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = [
    "ROOT",
    "Load",
    "Row",
    "Server",
    "free_port",
    "load_tool",
    "machine",
    "median_load",
    "print_table",
    "run_load",
    "wait_for",
]

ROOT = Path(__file__).parents[2]

# wrk reports through this script: one JSON line after its usual text.
_WRK_REPORT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_s": %f, "bad_status": %d, "socket_errors": %d, ' ..
    '"p50_ms": %f, "p99_ms": %f}\\n',
    summary.requests, summary.duration / 1e6, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1e3, latency:percentile(99) / 1e3))
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(check: Callable[[], object], *, timeout: float = 30, what: str = "condition") -> object:
    """Poll ``check`` until it returns something truthy without raising an HTTP error."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what} (last error: {last!r})")


class Server:
    """A Python module run as a server process, its output kept in a log file."""

    def __init__(self, name: str, module_args: Sequence[str], env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.log = logdir / f"{name}.log"
        self._out = self.log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *module_args],
            env=env,
            cwd=ROOT,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log.read_text()}")

    def stop(self, timeout: float = 15) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


@dataclass(frozen=True)
class Load:
    """One round of load: requests/s over the round, latency percentiles, and what went wrong."""

    requests: int
    duration_s: float
    bad_status: int
    socket_errors: int
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s


def load_tool(choice: str = "auto") -> str:
    """``wrk`` or ``python``; ``auto`` is wrk when it is installed."""
    if choice == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    return choice


def run_load(
    url: str, *, headers: dict[str, str], connections: int, duration_s: float, tool: str = "auto"
) -> Load:
    """Load ``url`` with ``connections`` keep-alive connections for ``duration_s`` from another process."""
    header_args = [arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")]
    with tempfile.TemporaryDirectory() as tmp:
        if load_tool(tool) == "wrk":
            script = Path(tmp) / "report.lua"
            script.write_text(_WRK_REPORT)
            command = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s:g}s", "--timeout", "10s"]
            command += ["-s", str(script), *header_args, url]
        else:
            command = [sys.executable, "-m", "tests.bench._load", url, "-c", str(connections)]
            command += ["-d", f"{duration_s:g}", *header_args]
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=duration_s + 30, check=True
        )
    report = next(line for line in reversed(done.stdout.splitlines()) if line.startswith("{"))
    return Load(**json.loads(report))


def median_load(rounds: Sequence[Load]) -> Load:
    """The median of each figure over ``rounds`` (requests/s through ``requests`` over a 1 s duration)."""
    return Load(
        requests=round(statistics.median(r.rps for r in rounds)),
        duration_s=1.0,
        bad_status=sum(r.bad_status for r in rounds),
        socket_errors=sum(r.socket_errors for r in rounds),
        p50_ms=statistics.median(r.p50_ms for r in rounds),
        p99_ms=statistics.median(r.p99_ms for r in rounds),
    )


def machine() -> str:
    """One line about where the figures come from."""
    load1, load5, _ = os.getloadavg()
    return (
        f"{os.cpu_count()} CPUs, {platform.python_implementation()} {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, load average {load1:.2f} (1 min) {load5:.2f} (5 min)"
    )


@dataclass(frozen=True)
class Row:
    """One line of the result table; ``target`` (and so pass/fail) only where the issue sets one."""

    figure: str
    ours: float
    baseline: float
    target: float | None = None
    higher_is_better: bool = True

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        ok = self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target
        return "pass" if ok else "FAIL"


def print_table(rows: Sequence[Row]) -> None:
    header = ("figure", "ours", "baseline", "ratio", "target", "result")
    lines = [
        (
            r.figure,
            f"{r.ours:,.1f}",
            f"{r.baseline:,.1f}",
            f"{r.ratio:.2f}",
            "" if r.target is None else f"{'≥' if r.higher_is_better else '≤'} {r.target:.2f}",
            r.verdict,
        )
        for r in rows
    ]
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines, strict=True)]
    for i, line in enumerate([header, *lines]):
        print(
            "  ".join(
                cell.ljust(w) if j == 0 else cell.rjust(w)
                for j, (cell, w) in enumerate(zip(line, widths, strict=True))
            )
        )
        if i == 0:
            print("  ".join("-" * w for w in widths))

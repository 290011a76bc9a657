"""What every benchmark needs: server processes on loopback, a load generator process, medians, a table.

The load comes from ``wrk`` when it is installed (one thread: the servers get the other core), else from
``python -m tests.bench._load``. Either way it is another process, bounded in connections and time; it
sends one GET again and again, or POSTs the lines of a file (``write_posts``) in turn. ``deploy`` starts the
gateway (one process or several on one database) and the simulator, with one authorizer authorized;
``cpu_seconds`` and ``profile`` look at a server process from outside. ``success_route`` is the bare POST
route that push benchmarks measure against.

A benchmark's results are ``Row``s: one figure of ours against its baseline, with the benchmark's name
(``bench``) and what it measures (``kind``) for the suite's combined table and chart (see ``__init__``).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
from litestar import Litestar, Request, post

from gateway.cli.demo import demo_environment
from tests.support.flows import approve_authorization, push_ticket
from tests.support.servers import free_port

__all__ = [
    "AUTHORIZER",
    "CLIENT_KEY",
    "COMPONENT_APPID",
    "EXAMPLE",
    "PLATFORM",
    "ROOT",
    "TOKEN_PATH",
    "Deployment",
    "Gateway",
    "Kind",
    "Load",
    "Row",
    "Server",
    "cpu_seconds",
    "deploy",
    "free_port",
    "load_tool",
    "machine",
    "median_load",
    "print_table",
    "profile",
    "run_load",
    "success_route",
    "table_lines",
    "wait_for",
    "write_posts",
]

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "config" / "registry.example.yaml"
PLATFORM = "retail"
COMPONENT_APPID = "wxc0mp000000001"  # retail, in the example registry
AUTHORIZER = "wxa0000000000001"
CLIENT_KEY = "demo-crm-key"  # the example registry's public demo key of client "crm" (scopes token, proxy)
TOKEN_PATH = f"/v1/authorizers/{AUTHORIZER}/access-token"

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

# With a file of POSTs (``write_posts``): each request is the next line's, from the start again at the end.
_WRK_POSTS = """
local posts = {}
local next_post = 0
init = function(args)
  for line in io.lines(args[1]) do
    local tab = line:find("\t", 1, true)
    local headers = {["Content-Type"] = "text/xml"}
    for name, value in pairs(wrk.headers) do headers[name] = value end
    posts[#posts + 1] = wrk.format("POST", line:sub(1, tab - 1), headers, line:sub(tab + 1))
  end
end
request = function()
  next_post = next_post % #posts + 1
  return posts[next_post]
end
"""


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


def write_posts(path: Path, posts: Iterable[tuple[str, str]]) -> int:
    """Write ``(target, body)`` pairs for ``run_load(posts=path)``: one ``TARGET<TAB>BODY`` line each, the
    target a path with its query; neither may hold a tab or a newline. Returns how many were written."""
    count = 0
    with path.open("w") as file:
        for target, body in posts:
            if any(c in target + body for c in "\t\n\r"):
                raise ValueError("a POST's target or body holds a tab or a line break")
            file.write(f"{target}\t{body}\n")
            count += 1
    return count


def load_tool(choice: str = "auto") -> str:
    """``wrk`` or ``python``; ``auto`` is wrk when it is installed."""
    if choice == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    return choice


def run_load(
    url: str,
    *,
    headers: dict[str, str],
    connections: int,
    duration_s: float,
    tool: str = "auto",
    posts: Path | None = None,
) -> Load:
    """Load ``url`` with ``connections`` keep-alive connections for ``duration_s`` from another process.

    With ``posts`` (a file from ``write_posts``) each request is the next POST of the file on ``url``'s
    host, starting over when the file runs out; otherwise every request is a GET of ``url``."""
    header_args = [arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")]
    with tempfile.TemporaryDirectory() as tmp:
        if load_tool(tool) == "wrk":
            script = Path(tmp) / "report.lua"
            script.write_text(_WRK_REPORT + (_WRK_POSTS if posts is not None else ""))
            command = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s:g}s", "--timeout", "10s"]
            command += ["-s", str(script), *header_args, url]
            command += ["--", str(posts)] if posts is not None else []
        else:
            command = [sys.executable, "-m", "tests.bench._load", url, "-c", str(connections)]
            command += ["-d", f"{duration_s:g}", *header_args]
            command += ["--posts", str(posts)] if posts is not None else []
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


Kind = Literal["throughput", "latency", "cpu", "memory", "time", ""]


@dataclass(frozen=True)
class Row:
    """One line of the result table; ``target`` (and so pass/fail) only where the issue sets one.

    The target bounds the ratio ours/baseline, or with ``added`` the difference ours − baseline.
    ``kind`` says what the figure measures (the suite's chart draws throughput and latency; ``""``: none
    of these), ``bench`` which benchmark measured it (the suite fills it in when it is left empty).
    """

    figure: str
    ours: float
    baseline: float
    target: float | None = None
    higher_is_better: bool = True
    added: bool = False
    kind: Kind = ""
    bench: str = ""

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline if self.baseline else float("nan")

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        judged = self.ours - self.baseline if self.added else self.ratio
        ok = judged >= self.target if self.higher_is_better else judged <= self.target
        return "pass" if ok else "FAIL"

    @property
    def target_text(self) -> str:
        if self.target is None:
            return ""
        sign = "≥" if self.higher_is_better else "≤"
        return f"{sign} +{self.target:.2f} added" if self.added else f"{sign} {self.target:.2f}"


def _number(value: float) -> str:
    return f"{value:,.1f}" if abs(value) >= 10 else f"{value:,.3g}"


def table_lines(
    rows: Sequence[Row],
    *,
    ours: str = "ours",
    baseline: str = "baseline",
    with_bench: bool = False,
    markdown: bool = False,
) -> list[str]:
    """The rows as an aligned text table (``markdown``: a Markdown one), the benchmark's name first with
    ``with_bench``."""
    header = (*(["bench"] if with_bench else []), "figure", ours, baseline, "ratio", "target", "result")
    lines = [
        (
            *([r.bench] if with_bench else []),
            r.figure,
            _number(r.ours),
            _number(r.baseline),
            f"{r.ratio:.2f}",
            r.target_text,
            r.verdict,
        )
        for r in rows
    ]
    texts = len(header) - 5  # the leading columns of text: aligned left, the figures right
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines, strict=True)]

    def cells(line: Sequence[str]) -> list[str]:
        return [
            cell.ljust(w) if j < texts else cell.rjust(w)
            for j, (cell, w) in enumerate(zip(line, widths, strict=True))
        ]

    if markdown:  # the figures aligned right, the result left
        last = len(widths) - 1
        rule = ["-" * (w - 1) + ":" if texts <= j < last else "-" * w for j, w in enumerate(widths)]
        body = [[*cells(line)[:-1], line[-1].ljust(widths[-1])] for line in (header, *lines)]
        return ["| " + " | ".join(line) + " |" for line in (body[0], rule, *body[1:])]
    out = ["  ".join(cells(header)).rstrip(), "  ".join("-" * w for w in widths)]
    return out + ["  ".join(cells(line)).rstrip() for line in lines]


def print_table(rows: Sequence[Row], *, ours: str = "ours", baseline: str = "baseline") -> None:
    for line in table_lines(rows, ours=ours, baseline=baseline):
        print(line)


def success_route(path: str) -> Litestar:
    """A Litestar app with one POST route on ``path`` that reads the body and answers ``success``: what a
    WeChat push costs a server that does nothing with it."""

    @post(path, status_code=200, media_type="text/plain")
    async def receive(request: Request[Any, Any, Any]) -> str:
        await request.body()
        return "success"

    return Litestar([receive], openapi_config=None, logging_config=None)


# --- looking at a server process ----------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far, all its threads (Linux: /proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state is fields[0]
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def profile(
    pid: int,
    out: Path,
    url: str,
    *,
    headers: dict[str, str],
    connections: int,
    duration_s: float,
    tool: str = "auto",
    posts: Path | None = None,
) -> None:
    """py-spy on ``pid`` while one more round loads ``url`` (with ``posts``: POSTs them, as ``run_load``);
    the format follows ``out``'s suffix."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    formats = {".svg": "flamegraph", ".json": "speedscope", ".txt": "raw"}
    # Blocking sampling (py-spy pauses the process for each sample): slower, but stacks are not torn.
    command = [py_spy, "record", "--pid", str(pid), "--duration", f"{duration_s:.0f}", "--rate", "250"]
    command += ["--format", formats.get(out.suffix, "flamegraph"), "--output", str(out)]
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        run_load(url, headers=headers, connections=connections, duration_s=duration_s, tool=tool, posts=posts)
    finally:
        _, errors = spy.communicate(timeout=duration_s + 30)
    if spy.returncode != 0:
        raise RuntimeError(f"py-spy failed ({spy.returncode}): {errors.strip()}")
    print(f"profile of pid {pid} under load: {out}")


# --- the gateway and the simulator -----------------------------------------------------------------


@dataclass(frozen=True)
class Gateway:
    """One ``gateway serve`` process."""

    name: str
    server: Server
    url: str


class Deployment:
    """Servers of one benchmark: gateways, the simulator, and whatever else it starts; stopped together."""

    def __init__(self, workdir: Path, env: dict[str, str], registry: Path, simulator_url: str) -> None:
        self.workdir = workdir
        self.env = env
        self.registry = registry
        self.simulator_url = simulator_url
        self.gateways: dict[str, Gateway] = {}
        self.token: httpx.Response | None = None  # the authorizer's token, as the gateway first vended it
        self.servers: dict[str, Server] = {}

    def start(self, name: str, module_args: Sequence[str], env: Mapping[str, str] | None = None) -> Server:
        """``python -m MODULE_ARGS`` with the deployment's environment and ``env``, logging to NAME.log."""
        if name in self.servers:
            raise ValueError(f"a server named {name!r} is already started")
        server = Server(name, module_args, {**self.env, **(env or {})}, self.workdir)
        self.servers[name] = server
        return server

    def start_gateway(
        self,
        name: str,
        env: Mapping[str, str] | None = None,
        *,
        registry: Path | None = None,
        module: str = "gateway",
    ) -> Gateway:
        """``gateway serve`` on a port of its own and the common database; returns once it is ready.

        ``registry`` replaces the deployment's (another ``api_base``, say); ``module`` is what runs as
        ``python -m MODULE serve …`` (a launcher that adjusts the gateway before it starts)."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        config = str(registry or self.registry)
        serve = [module, "serve", "--config", config, "--port", str(port)]
        # Every benchmark's registry holds the example's public demo keys, which serve refuses unless told.
        defaults = {"GATEWAY_PUBLIC_URL": url, "GATEWAY_ALLOW_UNSAFE": "example-keys"}
        gateway = Gateway(name, self.start(name, serve, {**defaults, **(env or {})}), url)
        # A loaded machine (the suite, other work) can take a while to start a gateway.
        ready = f"{gateway.url}/readyz"
        wait_for(lambda: httpx.get(ready).status_code == 200, timeout=120, what=f"the {name}")
        self.gateways[name] = gateway
        return gateway

    def check_alive(self) -> None:
        for server in self.servers.values():
            server.check_alive()

    def stop(self) -> None:
        for server in reversed(self.servers.values()):
            server.stop()


@contextmanager
def deploy(
    prefix: str, gateways: Mapping[str, Mapping[str, str]] | None = None, *, registry_suffix: str = ""
) -> Iterator[Deployment]:
    """The gateway and ``gateway simulate`` on loopback, ``AUTHORIZER`` authorized on retail.

    Each gateway is ``gateway serve`` on one SQLite database in a temporary directory, with the example
    registry (generated secrets, ``api_base`` pointed at the simulator); ``gateways`` maps their names
    to extra environment (default: one, ``gateway``); ``registry_suffix`` is appended to the registry
    (a ``subscriptions:`` section, say). The simulator pushes to the first. The
    administrator's approval goes through the simulator (as in ``tests/support/flows.py``), then the
    authorizer's token is fetched once through the first gateway: ``Deployment.token``.
    """
    named = dict(gateways or {"gateway": {}})
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        workdir = Path(tmp)
        simulator_port = free_port()
        simulator_url = f"http://127.0.0.1:{simulator_port}"
        registry = workdir / "registry.yaml"
        registry.write_text(
            EXAMPLE.read_text().replace("http://127.0.0.1:8001", simulator_url) + registry_suffix
        )
        # The caller's environment without gateway settings or registry secrets, then generated ones.
        # The server's loop and parser (gateway.http.serving) pass through: every server of a run, the
        # baselines included, runs on the same ones.
        ours = ("GATEWAY_", "RETAIL_", "FINANCE_", "SERVICES_")
        kept = ("GATEWAY_EVENT_LOOP", "GATEWAY_HTTP_PARSER")
        env = {k: v for k, v in os.environ.items() if not k.startswith(ours) or k in kept}
        env.update(demo_environment(EXAMPLE, {}))
        env["GATEWAY_DATABASE_URL"] = f"sqlite+aiosqlite:///{workdir / 'gateway.db'}"
        env["GATEWAY_ALLOW_UNSAFE"] = "example-keys"  # the example registry's public demo keys
        deployment = Deployment(workdir, env, registry, simulator_url)
        try:
            (first, first_env), *others = named.items()
            gateway = deployment.start_gateway(first, first_env)
            simulate = ["gateway", "simulate", "--config", str(registry), "--gateway-url", gateway.url]
            simulate += ["--port", str(simulator_port), "--ticket-interval", "0"]
            deployment.start("simulator", simulate)
            wait_for(lambda: httpx.get(f"{simulator_url}/sim/state").status_code == 200, what="the simulator")
            deployment.token = asyncio.run(_authorize(simulator_url, gateway.url, env["RETAIL_APPSECRET"]))
            for name, extra in others:  # on the same database: the authorization is theirs too
                deployment.start_gateway(name, extra)
            yield deployment
        finally:
            deployment.stop()


async def _authorize(simulator_url: str, gateway_url: str, component_secret: str) -> httpx.Response:
    """A ticket for retail, the authorizer's approval through the simulator, the token fetched once."""
    headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
    async with (
        httpx.AsyncClient(base_url=simulator_url, timeout=10) as sim,
        httpx.AsyncClient(base_url=gateway_url, timeout=10, headers=headers) as gateway,
    ):
        pushed = await push_ticket(sim, COMPONENT_APPID)
        if pushed.get("body") != "success":
            raise RuntimeError(f"the gateway refused the ticket push: {pushed}")
        await approve_authorization(sim, COMPONENT_APPID, component_secret, AUTHORIZER, [1, 2, 24])
        for _ in range(200):  # until the gateway has acted on the `authorized` push
            response = await gateway.get(TOKEN_PATH)
            if response.status_code == 200:
                return response
            await asyncio.sleep(0.05)
    raise RuntimeError(f"no token from the gateway: {response.status_code} {response.text}")

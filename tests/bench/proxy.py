"""Benchmark: the ``/wx`` proxy against the same calls straight to the upstream, per upstream and stack.

    python -m tests.bench.proxy [--rounds 5] [--duration 5] [--connections 50] [--scenarios a,b,c]
                                [--upstreams simulator,threaded] [--threaded-server threaded|stdlib]
                                [--transports aiohttp,httpx,httpx2,aiohttp-plain]
                                [--profile FILE] [--profile-scenario c]

One deployment (see ``_harness.deploy``) on one database, with one authorizer authorized, and two kinds
of upstream standing in for WeChat, measured side by side:

- ``simulator``: ``gateway simulate`` (uvicorn, uvloop and httptools, like the gateway itself);
- ``threaded``: a plain ``http.server.ThreadingHTTPServer`` speaking HTTP/1.1 with keep-alive and a
  ``Content-Length`` (``tests/bench/_upstream.py``), answering the simulator's bytes.

For each upstream, one ``gateway serve`` per client stack (``--transports``), its ``wechat.api_base``
pointed at that upstream. The stack the gateway ships is ``aiohttp`` (httpx's API over aiohttp); the
others are put under it by ``tests/bench/_stacks.py`` for comparison: ``httpx`` (httpx's own transport),
``httpx2`` (the fork, its own transport), ``aiohttp-plain`` (``/wx`` on aiohttp with no httpx above) and
``httpx-aiohttp`` (the transport shipped before, when that package is installed).
The call is ``GET /cgi-bin/user/get``: direct, to the upstream with the real authorizer token (vended by
the gateway's ``/v1`` API); proxied, to ``/wx/cgi-bin/user/get`` with a gateway token from
``/wx/cgi-bin/token``. Three scenarios, as issue 4 sets them:

  a. concurrency 1: the latency the gateway adds (median p50, gateway − direct; target ≤ 1 ms);
  b. the upstream answering after 20 ms (for direct and proxied calls alike), concurrency 32:
     throughput gateway / direct (target ≥ 0.8: the gateway adds no queueing);
  c. no added latency, concurrency ``--connections`` (50): the gateway's CPU-seconds per 1,000 proxied
     calls (``/proc/PID/stat``, all threads, read around each round).

Each scenario has a warm-up round of every target (discarded), then rounds whose order rotates. The
figures are medians over the rounds; (a) and (b) are also given as the median of each round's pair
(gateway and its direct, measured one after the other), which the summary table shows. The targets of
(a) and (b) judge the stack the gateway ships with (``SHIPPED``) on every upstream; other stacks' rows are
reported beside it, unjudged.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.bench._harness import (
    AUTHORIZER,
    CLIENT_KEY,
    Deployment,
    Load,
    Row,
    cpu_seconds,
    deploy,
    free_port,
    load_tool,
    machine,
    median_load,
    print_table,
    profile,
    run_load,
    wait_for,
)
from tests.bench._upstream import MODES as THREADED_MODES

API = "cgi-bin/user/get"
ADDED_LATENCY_MS = 1.0
THROUGHPUT_RATIO = 0.8
DIRECT = "direct"
UPSTREAMS = ("simulator", "threaded")
SHIPPED = "aiohttp"  # gateway.wechat.client.AiohttpClient; the others by tests/bench/_stacks.py
STACKS = (SHIPPED, "httpx", "httpx2", "aiohttp-plain", "httpx-aiohttp")


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    connections: int
    delay_s: float


@dataclass(frozen=True)
class Round:
    """One round of load on one target, and the CPU time its server processes spent meanwhile."""

    load: Load
    gateway_cpu_s: float  # 0 for direct calls
    upstream_cpu_s: float
    connections: int | None = None  # connections the threaded upstream accepted meanwhile

    def per_thousand(self, cpu_s: float) -> float:
        return cpu_s / self.load.requests * 1000 if self.load.requests else float("nan")


def scenarios(connections: int) -> list[Scenario]:
    return [
        Scenario("a", "concurrency 1", 1, 0.0),
        Scenario("b", "upstream answering after 20 ms, concurrency 32", 32, 0.02),
        Scenario("c", f"no added latency, concurrency {connections}", connections, 0.0),
    ]


def target(upstream: str, name: str) -> str:
    """A target's name: ``simulator:direct``, ``threaded:aiohttp``…"""
    return f"{upstream}:{name}"


def _launch(stack: str) -> tuple[dict[str, str], str]:
    """The environment and the module (``python -m MODULE serve …``) of a gateway with ``stack``."""
    if stack == SHIPPED:
        return {}, "gateway"
    return {"BENCH_STACK": stack}, "tests.bench._stacks"


class Bench:
    """The targets of one deployment, loaded one round at a time."""

    def __init__(
        self,
        deployment: Deployment,
        duration_s: float,
        tool: str,
        stacks: Sequence[str],
        upstreams: Sequence[str],
        threaded_server: str,
    ) -> None:
        self.deployment = deployment
        self.duration_s = duration_s
        self.tool = tool
        assert deployment.token is not None
        real_token = deployment.token.json()["access_token"]
        first = next(iter(deployment.gateways.values()))
        issued = httpx.get(
            f"{first.url}/wx/cgi-bin/token",
            params={"grant_type": "client_credential", "appid": AUTHORIZER, "secret": CLIENT_KEY},
        ).json()
        if "access_token" not in issued:
            raise RuntimeError(f"no gateway token: {issued}")
        self.bases = {"simulator": deployment.simulator_url}
        self.upstream_pids = {"simulator": deployment.servers["simulator"].pid}
        if "threaded" in upstreams:
            self._start_threaded(real_token, threaded_server)
        self.urls: dict[str, str] = {}
        self.pids: dict[str, int] = {}
        self.upstream_of: dict[str, str] = {}
        for upstream in upstreams:
            self.urls[target(upstream, DIRECT)] = f"{self.bases[upstream]}/{API}?access_token={real_token}"
            self.upstream_of[target(upstream, DIRECT)] = upstream
            registry = self._registry(upstream)
            for stack in stacks:
                name = target(upstream, stack)
                gateway = deployment.gateways.get(name)
                if gateway is None:
                    env, module = _launch(stack)
                    gateway = deployment.start_gateway(name, env, registry=registry, module=module)
                self.urls[name] = f"{gateway.url}/wx/{API}?access_token={issued['access_token']}"
                self.pids[name] = gateway.server.pid
                self.upstream_of[name] = upstream

    def _start_threaded(self, real_token: str, mode: str) -> None:
        """The threaded upstream, answering the bytes the simulator answers."""
        sim = self.deployment.simulator_url
        answer = httpx.get(f"{sim}/{API}", params={"access_token": real_token})
        body = self.deployment.workdir / "user-get.json"
        body.write_bytes(answer.content)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = self.deployment.start("threaded", ["tests.bench._upstream", str(port), str(body), mode])
        wait_for(lambda: httpx.get(f"{url}/sim/stats").status_code == 200, what="the threaded upstream")
        self.bases["threaded"] = url
        self.upstream_pids["threaded"] = server.pid

    def _registry(self, upstream: str) -> Path:
        if upstream == "simulator":
            return self.deployment.registry
        text = self.deployment.registry.read_text()
        old = f"api_base: {self.deployment.simulator_url}"
        if old not in text:
            raise RuntimeError("the deployment's registry names no api_base to replace")
        registry = self.deployment.workdir / f"registry-{upstream}.yaml"
        registry.write_text(text.replace(old, f"api_base: {self.bases[upstream]}"))
        return registry

    def check_answers(self) -> int:
        """Every target answers the same JSON; returns its size in bytes."""
        answers = {name: httpx.get(url) for name, url in self.urls.items()}
        direct = answers[next(iter(answers))]
        if direct.status_code != 200 or "errcode" in direct.json():
            raise RuntimeError(f"the upstream refused the direct call: {direct.text}")
        for name, answer in answers.items():
            if answer.status_code != 200 or answer.json() != direct.json():
                raise RuntimeError(f"{name} answers {answer.status_code} {answer.text}, not {direct.text}")
        return len(direct.content)

    def delay(self, delay_s: float) -> None:
        """Every upstream answers ``user/get`` after ``delay_s`` (0: no fault)."""
        for base in self.bases.values():
            httpx.delete(f"{base}/sim/faults").raise_for_status()
            if delay_s:
                fault = {"endpoint": "user/get", "delay_s": delay_s}
                httpx.post(f"{base}/sim/faults", json=fault).raise_for_status()

    def load(self, name: str, connections: int) -> Round:
        self.deployment.check_alive()
        pid = self.pids.get(name)
        upstream_pid = self.upstream_pids[self.upstream_of[name]]
        threaded = self.upstream_of[name] == "threaded"
        accepted = self._accepted() if threaded else 0
        before = cpu_seconds(pid) if pid else 0.0
        upstream_before = cpu_seconds(upstream_pid)
        load = run_load(
            self.urls[name], headers={}, connections=connections, duration_s=self.duration_s, tool=self.tool
        )
        gateway_cpu = cpu_seconds(pid) - before if pid else 0.0
        upstream_cpu = cpu_seconds(upstream_pid) - upstream_before
        # Less the connection that asked (each ask is a connection of its own).
        opened = self._accepted() - accepted - 1 if threaded else None
        return Round(load, gateway_cpu, upstream_cpu, opened)

    def _accepted(self) -> int:
        return int(httpx.get(f"{self.bases['threaded']}/sim/stats").json()["connections"])

    def measure(self, scenario: Scenario, rounds: int) -> dict[str, list[Round]]:
        names = list(self.urls)
        self.delay(scenario.delay_s)
        try:
            for name in names:  # warm-up, discarded
                self.load(name, scenario.connections)
            results: dict[str, list[Round]] = {name: [] for name in names}
            for i in range(rounds):
                order = names[i % len(names) :] + names[: i % len(names)]
                for name in order:
                    results[name].append(self.load(name, scenario.connections))
                line = ", ".join(f"{name} {results[name][-1].load.rps:,.0f}" for name in names)
                print(f"  ({scenario.key}) round {i + 1}, req/s: {line}", flush=True)
        finally:
            self.delay(0)
        return results


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _cpu(rounds: Sequence[Round], gateway: bool = True) -> float:
    return _median([r.per_thousand(r.gateway_cpu_s if gateway else r.upstream_cpu_s) for r in rounds])


def _latency(figure: str, ours: float, baseline: float) -> Row:
    return Row(figure, ours, baseline, higher_is_better=False, kind="latency")


def _throughput(figure: str, ours: float, baseline: float) -> Row:
    return Row(figure, ours, baseline, kind="throughput")


@dataclass(frozen=True)
class Pairs:
    """Each round's (a) difference and (b) ratio of a gateway and its direct target."""

    added_ms: list[float]
    ratios: list[float]


def _pairs(results: dict[str, dict[str, list[Round]]], name: str, direct: str) -> Pairs:
    a, b = results.get("a", {}), results.get("b", {})
    added = [g.load.p50_ms - d.load.p50_ms for g, d in zip(a.get(name, []), a.get(direct, []), strict=True)]
    ratios = [g.load.rps / d.load.rps for g, d in zip(b.get(name, []), b.get(direct, []), strict=True)]
    return Pairs(added, ratios)


def _stack_rows(
    results: dict[str, dict[str, list[Round]]], name: str, direct: str, judged: bool, connections: int
) -> list[Row]:
    rows: list[Row] = []
    ours = {key: median_load([r.load for r in rounds[name]]) for key, rounds in results.items()}
    base = {key: median_load([r.load for r in rounds[direct]]) for key, rounds in results.items()}
    if "a" in results:
        rows += [
            Row(
                "(a) latency p50 ms, concurrency 1",
                ours["a"].p50_ms,
                base["a"].p50_ms,
                target=ADDED_LATENCY_MS if judged else None,
                higher_is_better=False,
                added=True,
                kind="latency",
            ),
            _latency("(a) latency p99 ms, concurrency 1", ours["a"].p99_ms, base["a"].p99_ms),
        ]
    if "b" in results:
        rows += [
            Row(
                "(b) requests/s, 20 ms upstream, c 32",
                ours["b"].rps,
                base["b"].rps,
                THROUGHPUT_RATIO if judged else None,
                kind="throughput",
            ),
            _latency("(b) latency p50 ms, 20 ms upstream", ours["b"].p50_ms, base["b"].p50_ms),
            _latency("(b) latency p99 ms, 20 ms upstream", ours["b"].p99_ms, base["b"].p99_ms),
        ]
    if "c" in results:
        rows += [
            _throughput(f"(c) requests/s, concurrency {connections}", ours["c"].rps, base["c"].rps),
            _latency(f"(c) latency p50 ms, concurrency {connections}", ours["c"].p50_ms, base["c"].p50_ms),
            Row(
                "(c) CPU-s per 1,000 calls: gateway | upstream",
                _cpu(results["c"][name]),
                _cpu(results["c"][direct], gateway=False),
                higher_is_better=False,
                kind="cpu",
            ),
        ]
    return rows


def summary_lines(
    results: dict[str, dict[str, list[Round]]], stacks: Sequence[str], upstreams: Sequence[str]
) -> list[str]:
    """One line per stack and upstream: (a) added ms and (b) ratio as medians of round pairs, and the
    gateway's CPU per 1,000 calls in each scenario run."""
    header = ["stack", "upstream", "(a) added ms", "(b) ratio", *(f"({k}) CPU-s/1k" for k in results)]
    lines = []
    for stack in stacks:
        for upstream in upstreams:
            name, direct = target(upstream, stack), target(upstream, DIRECT)
            pairs = _pairs(results, name, direct)
            lines.append(
                [
                    stack,
                    upstream,
                    f"{_median(pairs.added_ms):+.2f}",
                    f"{_median(pairs.ratios):.2f}",
                    *(f"{_cpu(by_target[name]):.3f}" for by_target in results.values()),
                ]
            )
    widths = [max(len(row[i]) for row in (header, *lines)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in pairs)

    return [line(header), "  ".join("-" * w for w in widths), *(line(row) for row in lines)]


def report(
    results: dict[str, dict[str, list[Round]]],
    stacks: Sequence[str],
    upstreams: Sequence[str],
    connections: int,
) -> list[Row]:
    """Print the tables; return their rows, each figure prefixed by its upstream and stack
    (``threaded · aiohttp: …``)."""
    returned: list[Row] = []
    for scenario, by_target in results.items():
        for name, rounds in by_target.items():
            errors = sum(r.load.bad_status + r.load.socket_errors for r in rounds)
            if errors:
                print(f"WARNING: ({scenario}) {name}: {errors} failed requests; its figures are not valid")
    for upstream in upstreams:
        direct = target(upstream, DIRECT)
        for stack in stacks:
            name = target(upstream, stack)
            # The targets judge the gateway as it ships; another stack's figures are there to compare.
            shipped = stack == SHIPPED
            rows = _stack_rows(results, name, direct, shipped, connections)
            print()
            print(
                f"gateway with the {stack} stack, against direct calls to the {upstream} upstream"
                + ("" if shipped else " (for comparison: the targets judge the shipped stack)")
            )
            print_table(rows, ours="gateway", baseline="direct")
            pairs = _pairs(results, name, direct)
            if upstream == "threaded":
                opened = {key: [r.connections for r in by_target[name]] for key, by_target in results.items()}
                print(f"connections the gateway opened to the upstream in each round: {opened}")
            print(
                f"(a) added p50 ms of each round's pair: {', '.join(f'{x:.2f}' for x in pairs.added_ms)} "
                f"(median {_median(pairs.added_ms):.2f}); "
                f"(b) ratio of each round's pair: {', '.join(f'{x:.2f}' for x in pairs.ratios)} "
                f"(median {_median(pairs.ratios):.2f})"
            )
            returned += [dataclasses.replace(r, figure=f"{upstream} · {stack}: {r.figure}") for r in rows]
        if "c" in results:
            upstream_cpu = _cpu(results["c"][direct], gateway=False)
            print(f"(c) {upstream} upstream CPU-s per 1,000 direct calls: {upstream_cpu:.3f}")
    print()
    print("every stack on every upstream: (a) and (b) as the median of round pairs")
    for line in summary_lines(results, stacks, upstreams):
        print(line)
    return returned


def run(
    rounds: int,
    duration_s: float,
    connections: int,
    tool: str,
    stacks: Sequence[str],
    profile_to: Path | None,
    profile_scenario: str,
    *,
    upstreams: Sequence[str] = UPSTREAMS,
    scenario_keys: Sequence[str] = ("a", "b", "c"),
    threaded_server: str = "threaded",
) -> list[Row]:
    first_env, first_module = _launch(stacks[0])
    first = {target(upstreams[0], stacks[0]): first_env} if first_module == "gateway" else None
    with deploy("bench-proxy-", first) as deployment:
        bench = Bench(deployment, duration_s, tool, stacks, upstreams, threaded_server)
        body_bytes = bench.check_answers()
        print(f"machine: {machine()}")
        print(
            f"load: {load_tool(tool)}, {duration_s:g} s per round, {rounds} rounds after a warm-up; "
            f"GET /{API}, answer {body_bytes} bytes; stacks: {', '.join(stacks)}; "
            f"upstreams: {', '.join(upstreams)}"
            + (f" (threaded server: {threaded_server})" if "threaded" in upstreams else "")
        )
        results: dict[str, dict[str, list[Round]]] = {}
        for scenario in scenarios(connections):
            if scenario.key in scenario_keys:
                print(f"({scenario.key}) {scenario.title}", flush=True)
                results[scenario.key] = bench.measure(scenario, rounds)
        print(f"machine after: {machine()}")
        rows = report(results, stacks, upstreams, connections)
        if profile_to is not None:
            scenario = next(s for s in scenarios(connections) if s.key == profile_scenario)
            bench.delay(scenario.delay_s)
            try:
                for name, pid in bench.pids.items():
                    label = name.replace(":", "-")
                    out = profile_to.with_name(f"{profile_to.stem}-{label}{profile_to.suffix}")
                    print()
                    print(f"({scenario.key}) {name}:")
                    profile(
                        pid,
                        out,
                        bench.urls[name],
                        headers={},
                        connections=scenario.connections,
                        duration_s=duration_s,
                        tool=tool,
                    )
            finally:
                bench.delay(0)
    return rows


def suite(quick: bool) -> list[Row]:
    """The shipped stack on both upstreams at the defaults, or for ``quick`` 2 rounds of 2 s."""
    rounds, duration_s = (2, 2.0) if quick else (5, 5.0)
    return run(rounds, duration_s, 50, "auto", [SHIPPED], None, "c")


def _names(value: str, allowed: Sequence[str], option: str, parser: argparse.ArgumentParser) -> list[str]:
    names = [part.strip() for part in value.split(",") if part.strip()]
    if not names or any(n not in allowed for n in names) or len(set(names)) < len(names):
        parser.error(f"{option}: distinct values of {', '.join(allowed)}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.proxy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds of each target (default 5)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per round (default 5)")
    parser.add_argument(
        "--connections", type=int, default=50, help="concurrent connections of scenario c (default 50)"
    )
    parser.add_argument(
        "--load",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="load generator (auto: wrk if installed)",
    )
    parser.add_argument(
        "--transports",
        default=SHIPPED,
        help=f"the gateways' client stacks, of {', '.join(STACKS)} (default {SHIPPED}, the shipped one)",
    )
    parser.add_argument(
        "--upstreams", default=",".join(UPSTREAMS), help=f"of {', '.join(UPSTREAMS)} (default both)"
    )
    parser.add_argument(
        "--threaded-server",
        choices=THREADED_MODES,
        default="threaded",
        help="stdlib: the threaded upstream with all of http.server's defaults (tests/bench/_upstream.py)",
    )
    parser.add_argument("--scenarios", default="a,b,c", help="of a, b, c (default all)")
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy each gateway during one more round: FILE.svg, .json or .txt (-TARGET is added)",
    )
    parser.add_argument(
        "--profile-scenario", choices=["a", "b", "c"], default="c", help="the round to profile (default c)"
    )
    args = parser.parse_args()
    stacks = _names(args.transports, STACKS, "--transports", parser)
    upstreams = _names(args.upstreams, UPSTREAMS, "--upstreams", parser)
    keys = _names(args.scenarios, ["a", "b", "c"], "--scenarios", parser)
    if not 1 <= args.rounds <= 20 or not 1 <= args.duration <= 60 or not 1 <= args.connections <= 500:
        parser.error("--rounds 1..20, --duration 1..60 s, --connections 1..500")
    run(
        args.rounds,
        args.duration,
        args.connections,
        args.load,
        stacks,
        args.profile,
        args.profile_scenario,
        upstreams=upstreams,
        scenario_keys=keys,
        threaded_server=args.threaded_server,
    )


if __name__ == "__main__":
    main()

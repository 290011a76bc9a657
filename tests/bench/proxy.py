"""Benchmark: the ``/wx`` proxy against the same calls straight to the simulator, per upstream transport.

    python -m tests.bench.proxy [--rounds 5] [--duration 5] [--connections 50] [--profile FILE]
                                [--transports httpx,aiohttp] [--profile-scenario c]

One deployment (see ``_harness.deploy``): ``gateway simulate`` and one ``gateway serve`` per upstream
transport (``GATEWAY_UPSTREAM_TRANSPORT``), all on one database, with one authorizer authorized. The call
is ``GET /cgi-bin/user/get``: direct, to the simulator with the real authorizer token (vended by the
gateway's ``/v1`` API); proxied, to ``/wx/cgi-bin/user/get`` with a gateway token from
``/wx/cgi-bin/token``. Three scenarios, as issue 4 sets them:

  a. concurrency 1: the latency the gateway adds (median p50, gateway − direct; target ≤ 1 ms);
  b. the simulator answering after 20 ms (a ``delay_s`` fault, for direct and proxied calls alike),
     concurrency 32: throughput gateway / direct (target ≥ 0.8: the gateway adds no queueing);
  c. no added latency, concurrency ``--connections`` (50): the gateway's CPU-seconds per 1,000 proxied
     calls (``/proc/PID/stat``, all threads, read around each round), per transport.

Each scenario has a warm-up round of every target (discarded), then rounds whose order rotates. The
figures are medians over the rounds. The targets of (a) and (b) judge the transport the gateway ships
with (``DEFAULT_UPSTREAM_TRANSPORT``); another transport's rows are reported beside it, unjudged.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from gateway.settings import DEFAULT_UPSTREAM_TRANSPORT
from gateway.wechat.client import UPSTREAM_TRANSPORTS
from tests.bench._harness import (
    AUTHORIZER,
    CLIENT_KEY,
    Deployment,
    Load,
    Row,
    cpu_seconds,
    deploy,
    load_tool,
    machine,
    median_load,
    print_table,
    profile,
    run_load,
)

API = "cgi-bin/user/get"
ADDED_LATENCY_MS = 1.0
THROUGHPUT_RATIO = 0.8
DIRECT = "direct"


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
    simulator_cpu_s: float

    def per_thousand(self, cpu_s: float) -> float:
        return cpu_s / self.load.requests * 1000 if self.load.requests else float("nan")


def scenarios(connections: int) -> list[Scenario]:
    return [
        Scenario("a", "concurrency 1", 1, 0.0),
        Scenario("b", "upstream answering after 20 ms, concurrency 32", 32, 0.02),
        Scenario("c", f"no added latency, concurrency {connections}", connections, 0.0),
    ]


def _gateway_name(transport: str) -> str:
    return f"gateway-{transport}"


class Bench:
    """The targets of one deployment, loaded one round at a time."""

    def __init__(self, deployment: Deployment, duration_s: float, tool: str) -> None:
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
        self.urls = {DIRECT: f"{deployment.simulator_url}/{API}?access_token={real_token}"}
        for name, gateway in deployment.gateways.items():
            self.urls[name] = f"{gateway.url}/wx/{API}?access_token={issued['access_token']}"
        self.pids = {name: gateway.server.pid for name, gateway in deployment.gateways.items()}
        self.simulator_pid = deployment.servers["simulator"].pid

    def check_answers(self) -> int:
        """Every target answers the same JSON; returns its size in bytes."""
        answers = {name: httpx.get(url) for name, url in self.urls.items()}
        direct = answers[DIRECT]
        if direct.status_code != 200 or "errcode" in direct.json():
            raise RuntimeError(f"the simulator refused the direct call: {direct.text}")
        for name, answer in answers.items():
            if answer.status_code != 200 or answer.json() != direct.json():
                raise RuntimeError(f"{name} answers {answer.status_code} {answer.text}, not {direct.text}")
        return len(direct.content)

    def delay(self, delay_s: float) -> None:
        """The simulator answers ``user/get`` after ``delay_s`` (0: no fault)."""
        sim = self.deployment.simulator_url
        httpx.delete(f"{sim}/sim/faults").raise_for_status()
        if delay_s:
            fault = {"endpoint": "user/get", "delay_s": delay_s}
            httpx.post(f"{sim}/sim/faults", json=fault).raise_for_status()

    def load(self, name: str, connections: int) -> Round:
        self.deployment.check_alive()
        pid = self.pids.get(name)
        before = cpu_seconds(pid) if pid else 0.0
        simulator_before = cpu_seconds(self.simulator_pid)
        load = run_load(
            self.urls[name], headers={}, connections=connections, duration_s=self.duration_s, tool=self.tool
        )
        gateway_cpu = cpu_seconds(pid) - before if pid else 0.0
        return Round(load, gateway_cpu, cpu_seconds(self.simulator_pid) - simulator_before)

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
                line = ", ".join(f"{name} {results[name][-1].load.rps:,.0f} req/s" for name in names)
                print(f"  ({scenario.key}) round {i + 1}: {line}", flush=True)
        finally:
            self.delay(0)
        return results


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def _gateway_cpu(rounds: Sequence[Round]) -> float:
    return _median([r.per_thousand(r.gateway_cpu_s) for r in rounds])


def _simulator_cpu(rounds: Sequence[Round]) -> float:
    return _median([r.per_thousand(r.simulator_cpu_s) for r in rounds])


def _latency(figure: str, ours: float, baseline: float) -> Row:
    return Row(figure, ours, baseline, higher_is_better=False, kind="latency")


def _throughput(figure: str, ours: float, baseline: float) -> Row:
    return Row(figure, ours, baseline, kind="throughput")


def report(
    results: dict[str, dict[str, list[Round]]], transports: Sequence[str], connections: int
) -> list[Row]:
    """Print the tables; return their rows, each figure prefixed by its transport (``aiohttp: …``) or by
    the comparison of the two (``aiohttp vs httpx: …``)."""
    a, b, c = results["a"], results["b"], results["c"]
    returned: list[Row] = []
    for scenario, by_target in results.items():
        for name, rounds in by_target.items():
            errors = sum(r.load.bad_status + r.load.socket_errors for r in rounds)
            if errors:
                print(f"WARNING: ({scenario}) {name}: {errors} failed requests; its figures are not valid")
    direct = {key: median_load([r.load for r in rounds[DIRECT]]) for key, rounds in results.items()}
    for transport in transports:
        name = _gateway_name(transport)
        # The targets judge the gateway as it ships; another transport's figures are there to compare.
        shipped = transport == DEFAULT_UPSTREAM_TRANSPORT
        ours = {key: median_load([r.load for r in rounds[name]]) for key, rounds in results.items()}
        added = [g.load.p50_ms - d.load.p50_ms for g, d in zip(a[name], a[DIRECT], strict=True)]
        paired = [g.load.rps / d.load.rps for g, d in zip(b[name], b[DIRECT], strict=True)]
        rows = [
            Row(
                "(a) latency p50 ms, concurrency 1",
                ours["a"].p50_ms,
                direct["a"].p50_ms,
                target=ADDED_LATENCY_MS if shipped else None,
                higher_is_better=False,
                added=True,
                kind="latency",
            ),
            _latency("(a) latency p99 ms, concurrency 1", ours["a"].p99_ms, direct["a"].p99_ms),
            Row(
                "(b) requests/s, 20 ms upstream, c 32",
                ours["b"].rps,
                direct["b"].rps,
                THROUGHPUT_RATIO if shipped else None,
                kind="throughput",
            ),
            _latency("(b) latency p50 ms, 20 ms upstream", ours["b"].p50_ms, direct["b"].p50_ms),
            _latency("(b) latency p99 ms, 20 ms upstream", ours["b"].p99_ms, direct["b"].p99_ms),
            _throughput(f"(c) requests/s, concurrency {connections}", ours["c"].rps, direct["c"].rps),
            _latency(f"(c) latency p50 ms, concurrency {connections}", ours["c"].p50_ms, direct["c"].p50_ms),
            Row(
                "(c) CPU-s per 1,000 calls: gateway | simulator",
                _gateway_cpu(c[name]),
                _simulator_cpu(c[DIRECT]),
                higher_is_better=False,
                kind="cpu",
            ),
        ]
        print()
        print(
            f"gateway with the {transport} transport, against direct calls to the simulator"
            + (
                ""
                if shipped
                else f" (for comparison: the targets judge the default, {DEFAULT_UPSTREAM_TRANSPORT})"
            )
        )
        print_table(rows, ours="gateway", baseline="direct")
        returned += [dataclasses.replace(r, figure=f"{transport}: {r.figure}") for r in rows]
        print(
            f"(a) added p50 ms of each round's pair: {', '.join(f'{x:.2f}' for x in added)} "
            f"(median {_median(added):.2f}); "
            f"(b) ratio of each round's pair: {', '.join(f'{x:.2f}' for x in paired)} "
            f"(median {_median(paired):.2f})"
        )
    if len(transports) < 2:
        return returned
    ours_t, base_t = transports[-1], transports[0]
    ours_n, base_n = _gateway_name(ours_t), _gateway_name(base_t)

    def median_of(rounds: Sequence[Round], figure: str) -> float:
        return _median([getattr(r.load, figure) for r in rounds])

    print()
    print(f"the {ours_t} transport against the {base_t} transport (the gateway process)")
    rows = [
        Row(
            "(a) latency p50 ms added",
            median_of(a[ours_n], "p50_ms") - median_of(a[DIRECT], "p50_ms"),
            median_of(a[base_n], "p50_ms") - median_of(a[DIRECT], "p50_ms"),
            higher_is_better=False,
            kind="latency",
        ),
        _throughput(
            "(b) requests/s, 20 ms upstream", median_of(b[ours_n], "rps"), median_of(b[base_n], "rps")
        ),
        _throughput("(c) requests/s", median_of(c[ours_n], "rps"), median_of(c[base_n], "rps")),
        _latency("(c) latency p99 ms", median_of(c[ours_n], "p99_ms"), median_of(c[base_n], "p99_ms")),
    ]
    for key, by_target in results.items():
        rows.append(
            Row(
                f"({key}) gateway CPU-s per 1,000 calls",
                _gateway_cpu(by_target[ours_n]),
                _gateway_cpu(by_target[base_n]),
                higher_is_better=False,
                kind="cpu",
            )
        )
    print_table(rows, ours=ours_t, baseline=base_t)
    return returned + [dataclasses.replace(r, figure=f"{ours_t} vs {base_t}: {r.figure}") for r in rows]


def run(
    rounds: int,
    duration_s: float,
    connections: int,
    tool: str,
    transports: Sequence[str],
    profile_to: Path | None,
    profile_scenario: str,
) -> list[Row]:
    gateways = {_gateway_name(t): {"GATEWAY_UPSTREAM_TRANSPORT": t} for t in transports}
    with deploy("bench-proxy-", gateways) as deployment:
        bench = Bench(deployment, duration_s, tool)
        body_bytes = bench.check_answers()
        print(f"machine: {machine()}")
        print(
            f"load: {load_tool(tool)}, {duration_s:g} s per round, {rounds} rounds after a warm-up; "
            f"GET /{API}, answer {body_bytes} bytes; transports: {', '.join(transports)}"
        )
        results: dict[str, dict[str, list[Round]]] = {}
        for scenario in scenarios(connections):
            print(f"({scenario.key}) {scenario.title}", flush=True)
            results[scenario.key] = bench.measure(scenario, rounds)
        print(f"machine after: {machine()}")
        rows = report(results, transports, connections)
        if profile_to is not None:
            scenario = next(s for s in scenarios(connections) if s.key == profile_scenario)
            bench.delay(scenario.delay_s)
            try:
                for transport in transports:
                    name = _gateway_name(transport)
                    out = profile_to.with_name(f"{profile_to.stem}-{transport}{profile_to.suffix}")
                    print()
                    print(f"({scenario.key}) {name}:")
                    profile(
                        bench.pids[name],
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


def default_transports() -> list[str]:
    """Every upstream transport, the default last: it is compared against the first."""
    others = [t for t in UPSTREAM_TRANSPORTS if t != DEFAULT_UPSTREAM_TRANSPORT]
    return [*others, DEFAULT_UPSTREAM_TRANSPORT]


def suite(quick: bool) -> list[Row]:
    """The defaults, or for ``quick`` 2 rounds of 2 s per scenario and target."""
    rounds, duration_s = (2, 2.0) if quick else (5, 5.0)
    return run(rounds, duration_s, 50, "auto", default_transports(), None, "c")


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
    default = ",".join(default_transports())
    parser.add_argument(
        "--transports",
        default=default,
        help="GATEWAY_UPSTREAM_TRANSPORT of each gateway; the last is compared against the first "
        f"(default {default})",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy each gateway during one more round: FILE.svg, .json or .txt (-TRANSPORT is added)",
    )
    parser.add_argument(
        "--profile-scenario", choices=["a", "b", "c"], default="c", help="the round to profile (default c)"
    )
    args = parser.parse_args()
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    if (
        not transports
        or any(t not in UPSTREAM_TRANSPORTS for t in transports)
        or len(set(transports)) < len(transports)
    ):
        parser.error(f"--transports: distinct values of {', '.join(UPSTREAM_TRANSPORTS)}")
    if not 1 <= args.rounds <= 20 or not 1 <= args.duration <= 60 or not 1 <= args.connections <= 500:
        parser.error("--rounds 1..20, --duration 1..60 s, --connections 1..500")
    run(
        args.rounds,
        args.duration,
        args.connections,
        args.load,
        transports,
        args.profile,
        args.profile_scenario,
    )


if __name__ == "__main__":
    main()

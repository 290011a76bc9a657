"""Benchmark: cached token vending against a bare Litestar route answering JSON of the same size.

    python -m tests.bench.tokens [--rounds 5] [--duration 5] [--connections 50] [--profile FILE]

Ours: ``gateway serve`` (SQLite in a temporary directory, the example registry with generated secrets,
WeChat played by ``gateway simulate``), one authorizer authorized through the simulator, its token
fetched once; then ``GET /v1/authorizers/{appid}/access-token`` with a client key, served from the
gateway's cache. Baseline: a Litestar app with one route of the same path that returns a constant
struct of the same shape and encoded size, under the same ``gateway.http.serving.serve`` (uvicorn, one
worker, same config). Rounds alternate which server goes first; a warm-up round of each is discarded.
The figure is the ratio of median requests/s, gateway over baseline; the issue's target is 0.8.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from pathlib import Path

import httpx
import msgspec
from litestar import Litestar, Response, get

from gateway.http.serving import Listener, run_event_loop, serve
from tests.bench._harness import (
    AUTHORIZER,
    CLIENT_KEY,
    PLATFORM,
    TOKEN_PATH,
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

PATH = TOKEN_PATH
TARGET = 0.8


# --- the baseline ----------------------------------------------------------------------------------


class _Body(msgspec.Struct, frozen=True):
    """The shape of ``gateway.access.service.IssuedToken``."""

    authorizer_appid: str
    platform: str
    access_token: str
    expires_at: int


def baseline_app(body_bytes: int) -> Litestar:
    """One route, no dependencies, no guards, answering a constant ``_Body`` encoded to ``body_bytes``."""
    empty = _Body(AUTHORIZER, PLATFORM, "", 1_700_000_000)
    padding = body_bytes - len(msgspec.json.encode(empty))
    if padding < 0:
        raise ValueError(f"a body of {body_bytes} bytes is smaller than the empty struct")
    body = _Body(AUTHORIZER, PLATFORM, "x" * padding, 1_700_000_000)

    @get("/v1/authorizers/{appid:str}/access-token")
    async def access_token(appid: str) -> Response[_Body]:
        return Response(body, headers={"Cache-Control": "no-store"})

    return Litestar(route_handlers=[access_token], logging_config=None)


def _serve_baseline(port: int, body_bytes: int) -> None:
    # As `gateway serve` does: logging configured by the process, the app under gateway.http.serving.serve.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    run_event_loop(serve([Listener(baseline_app(body_bytes), "127.0.0.1", port)]))


# --- the run ---------------------------------------------------------------------------------------


def run(rounds: int, duration_s: float, connections: int, tool: str, profile_to: Path | None) -> list[Row]:
    with deploy("bench-tokens-") as deployment:
        gateway = deployment.gateways["gateway"]
        assert deployment.token is not None
        body_bytes = len(deployment.token.content)
        baseline_port = free_port()
        baseline_url = f"http://127.0.0.1:{baseline_port}"
        baseline_args = ["tests.bench.tokens", "--serve-baseline", str(baseline_port)]
        baseline = deployment.start("baseline", [*baseline_args, "--body-bytes", str(body_bytes)])
        wait_for(lambda: httpx.get(baseline_url + PATH).status_code == 200, what="the baseline")
        same = httpx.get(baseline_url + PATH)
        if len(same.content) != body_bytes:
            raise RuntimeError(f"baseline body is {len(same.content)} bytes, ours {body_bytes}")

        targets = {"gateway": gateway.url + PATH, "baseline": baseline_url + PATH}
        pids = {"gateway": gateway.server.pid, "baseline": baseline.pid}
        headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
        cpu_us: dict[str, list[float]] = {"gateway": [], "baseline": []}

        def load(name: str) -> Load:
            deployment.check_alive()
            cpu_before = cpu_seconds(pids[name])
            result = run_load(
                targets[name], headers=headers, connections=connections, duration_s=duration_s, tool=tool
            )
            cpu_us[name].append((cpu_seconds(pids[name]) - cpu_before) / max(result.requests, 1) * 1e6)
            return result

        print(f"machine: {machine()}")
        print(
            f"load: {load_tool(tool)}, {connections} connections, {duration_s:g} s per round, "
            f"{rounds} rounds after a warm-up; response body {body_bytes} bytes"
        )
        for name in targets:  # warm-up, discarded
            load(name)
            cpu_us[name].clear()
        results: dict[str, list[Load]] = {"gateway": [], "baseline": []}
        for i in range(rounds):
            order = ("gateway", "baseline") if i % 2 == 0 else ("baseline", "gateway")
            for name in order:
                results[name].append(load(name))
            print(
                f"  round {i + 1}: gateway {results['gateway'][-1].rps:,.0f} req/s, "
                f"baseline {results['baseline'][-1].rps:,.0f} req/s",
                flush=True,
            )
        print(f"machine after: {machine()}")
        ours, base = median_load(results["gateway"]), median_load(results["baseline"])
        paired = [g.rps / b.rps for g, b in zip(results["gateway"], results["baseline"], strict=True)]
        for name, loads in results.items():
            errors = sum(r.bad_status + r.socket_errors for r in loads)
            if errors:
                print(f"WARNING: {name}: {errors} failed requests; its figures are not valid")
        print()
        rows = [
            Row("requests/s (median)", ours.rps, base.rps, target=TARGET, kind="throughput"),
            Row("latency p50 ms (median)", ours.p50_ms, base.p50_ms, higher_is_better=False, kind="latency"),
            Row("latency p99 ms (median)", ours.p99_ms, base.p99_ms, higher_is_better=False, kind="latency"),
            Row(
                "server CPU µs per request (median)",
                statistics.median(cpu_us["gateway"]),
                statistics.median(cpu_us["baseline"]),
                higher_is_better=False,
                kind="cpu",
            ),
        ]
        print_table(rows)
        print(
            f"ratio of each round's pair: {', '.join(f'{r:.2f}' for r in paired)} "
            f"(median {statistics.median(paired):.2f})"
        )
        if profile_to is not None:
            print()
            profile(
                gateway.server.pid,
                profile_to,
                targets["gateway"],
                headers=headers,
                connections=connections,
                duration_s=duration_s,
                tool=tool,
            )
    return rows


def suite(quick: bool) -> list[Row]:
    """The defaults, or for ``quick`` 2 rounds of 2 s."""
    return run(2, 2.0, 50, "auto", None) if quick else run(5, 5.0, 50, "auto", None)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.tokens",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds of each server (default 5)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per round (default 5)")
    parser.add_argument("--connections", type=int, default=50, help="concurrent connections (default 50)")
    parser.add_argument(
        "--load",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="load generator (auto: wrk if installed)",
    )
    parser.add_argument(
        "--profile", type=Path, help="py-spy the gateway during one more round: FILE.svg, .json or .txt"
    )
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--body-bytes", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline is not None:
        _serve_baseline(args.serve_baseline, args.body_bytes)
        return
    if not 1 <= args.rounds <= 20 or not 1 <= args.duration <= 60 or not 1 <= args.connections <= 500:
        parser.error("--rounds 1..20, --duration 1..60 s, --connections 1..500")
    run(args.rounds, args.duration, args.connections, args.load, args.profile)


if __name__ == "__main__":
    main()

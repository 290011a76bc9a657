"""Benchmark: user messages from WeChat to a subscriber, against a bare Litestar POST route.

    python -m tests.bench.forwarding [--rounds 3] [--duration 5] [--connections 16] [--sequential 300]

One deployment (see ``_harness.deploy``): ``gateway serve`` with one subscription (client ``crm``, every
message type, no ``reply``) to a local subscriber process that answers 204 and counts. Every push is a
distinct text message (its own ``MsgId``), encrypted and signed for retail as WeChat sends it, made
before the load starts; the load process POSTs them to the message URL of the authorized account.

  a. added latency before WeChat's answer: pushes one at a time (``--sequential`` of them) 50 ms apart,
     median latency of the gateway − median of the baseline (target ≤ 5 ms): verify, decrypt, parse,
     look up the authorizer and store the message with its delivery, before answering ``success``; and
     the same back to back, where each push also waits for the deliveries of those before it;
  b. messages accepted per second with ``--connections`` at once (gateway / baseline), and messages
     delivered per second: the accepted count over the time from the round's start until the subscriber
     had them all.

The baseline is a Litestar app with one POST route on the same path that reads the body and answers
``success``, served the same way (``gateway.http.serving.serve``). Each round runs the gateway and the
baseline in alternating order; figures are medians over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from litestar import Litestar, Request, Response, get, post

from gateway.http.serving import Listener, run_event_loop, serve
from gateway.simulator import SimComponent
from gateway.simulator.pushes import message_envelope
from gateway.simulator.state import UserMessage
from tests.bench._harness import (
    AUTHORIZER,
    COMPONENT_APPID,
    ROOT,
    Row,
    deploy,
    free_port,
    machine,
    print_table,
    success_route,
    wait_for,
)

PATH = f"/wechat/retail/messages/{AUTHORIZER}"
ADDED_LATENCY_MS = 5.0
# WeChat relays an account's messages as its users write them; spaced pushes measure what one push waits
# for, back-to-back ones also what the deliveries of the ones before cost it (one event loop, two cores).
PACE_S = 0.05


# --- the baseline and the subscriber (served by this module in processes of their own) ----------------


def subscriber_app() -> Litestar:
    received: set[str] = set()

    @post("/inbox", status_code=204)
    async def inbox(request: Request[Any, Any, Any]) -> None:
        received.add(request.headers.get("x-gateway-delivery", ""))

    @get("/count")
    async def count() -> Response[dict[str, int]]:
        return Response({"count": len(received)})

    return Litestar([inbox, count], openapi_config=None, logging_config=None)


# --- the load: pre-made pushes from a process of their own ---------------------------------------------


async def _push_load(
    url: str, pushes: list[dict[str, str]], connections: int, duration_s: float, pace_s: float = 0.0
) -> dict[str, float]:
    latencies: list[float] = []
    bad = 0
    next_push = iter(pushes)
    deadline = time.monotonic() + duration_s

    async def connection(client: httpx.AsyncClient) -> None:
        nonlocal bad
        for push in next_push:
            if time.monotonic() >= deadline:
                return
            started = time.perf_counter()
            response = await client.post(push["target"], content=push["body"].encode())
            latencies.append(time.perf_counter() - started)
            bad += response.status_code != 200 or response.text != "success"
            if pace_s:
                await asyncio.sleep(pace_s)

    started = time.monotonic()
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        await asyncio.gather(*(connection(client) for _ in range(connections)))
    elapsed = time.monotonic() - started
    return {
        "requests": len(latencies),
        "duration_s": elapsed,
        "bad": bad,
        "p50_ms": statistics.median(latencies) * 1e3 if latencies else 0.0,
    }


_next_msg_id = iter(range(10**15, 10**16))


def make_pushes(env: dict[str, str], count: int, out: Path) -> None:
    """``count`` text messages to the authorizer, each encrypted and signed as WeChat sends them, each
    with a ``MsgId`` never used before (a repeated one is a WeChat retry, answered without delivery)."""
    component = SimComponent(
        COMPONENT_APPID, env["RETAIL_APPSECRET"], env["RETAIL_TOKEN"], env["RETAIL_AES_KEY"]
    )
    now = int(time.time())
    with out.open("w") as file:
        for n in range(count):
            fields: dict[str, str | int] = {
                "MsgType": "text",
                "Content": f"hello {n}",
                "MsgId": next(_next_msg_id),
            }
            message = UserMessage(
                COMPONENT_APPID, AUTHORIZER, "gh_bench0000001", f"o_user_{n % 97}", now, fields
            )
            params, xml = message_envelope(component, message, str(now), secrets.token_hex(5))
            target = PATH + "?" + "&".join(f"{k}={v}" for k, v in params.items())
            file.write(json.dumps({"target": target, "body": xml}) + "\n")


def load(
    url: str, pushes: Path, connections: int, duration_s: float, pace_s: float = 0.0
) -> dict[str, float]:
    """Run the push load from another process and return its report."""
    command = [sys.executable, "-m", "tests.bench.forwarding", "--push-load", url, "--requests", str(pushes)]
    command += ["--connections", str(connections), "--duration", f"{duration_s:g}", "--pace", f"{pace_s:g}"]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=duration_s + 120, check=True
    )
    report: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    if report["bad"]:
        raise RuntimeError(f"{report['bad']} pushes were not answered 200 success by {url}")
    return report


def delivered(subscriber_url: str) -> int:
    return int(httpx.get(f"{subscriber_url}/count").json()["count"])


def run(rounds: int, duration_s: float, connections: int, sequential: int) -> list[Row]:
    subscriber_port = free_port()
    subscriber_url = f"http://127.0.0.1:{subscriber_port}"
    suffix = f'\nsubscriptions:\n  - {{client: crm, url: "{subscriber_url}/inbox", secret: bench-secret}}\n'
    with deploy("gateway-bench-forwarding-", registry_suffix=suffix) as deployment:
        gateway = deployment.gateways["gateway"]
        deployment.start("subscriber", ["tests.bench.forwarding", "--serve-subscriber", str(subscriber_port)])
        baseline_port = free_port()
        baseline_url = f"http://127.0.0.1:{baseline_port}"
        deployment.start("baseline", ["tests.bench.forwarding", "--serve-baseline", str(baseline_port)])
        wait_for(lambda: httpx.get(f"{subscriber_url}/count").status_code == 200, what="the subscriber")
        wait_for(lambda: httpx.post(baseline_url + PATH).status_code == 200, what="the baseline")

        workdir = Path(tempfile.mkdtemp(dir=deployment.workdir))
        per_round = max(sequential, int(duration_s * 3000))  # more than the gateway can take in a round
        latency: dict[str, list[float]] = {"gateway": [], "baseline": []}
        unpaced: dict[str, list[float]] = {"gateway": [], "baseline": []}
        accepted: dict[str, list[float]] = {"gateway": [], "baseline": []}
        delivery_rates: list[float] = []
        for i in range(rounds + 1):  # round 0 warms up and is discarded
            order = ("gateway", "baseline") if i % 2 == 0 else ("baseline", "gateway")
            for name in order:
                url = gateway.url if name == "gateway" else baseline_url
                pushes = workdir / f"{name}-{i}-seq.jsonl"
                make_pushes(deployment.env, sequential, pushes)
                seq = load(url, pushes, 1, 600, PACE_S)
                pushes = workdir / f"{name}-{i}-b2b.jsonl"
                make_pushes(deployment.env, sequential, pushes)
                back_to_back = load(url, pushes, 1, 600)
                pushes = workdir / f"{name}-{i}-load.jsonl"
                make_pushes(deployment.env, per_round, pushes)
                before = delivered(subscriber_url)
                started = time.monotonic()
                report = load(url, pushes, connections, duration_s)
                if name == "gateway":
                    expected = before + int(report["requests"])
                    wait_for(
                        lambda e=expected: delivered(subscriber_url) >= e, timeout=300, what="deliveries"
                    )
                    rate = report["requests"] / (time.monotonic() - started)
                deployment.check_alive()
                if i == 0:
                    continue
                latency[name].append(seq["p50_ms"])
                unpaced[name].append(back_to_back["p50_ms"])
                accepted[name].append(report["requests"] / report["duration_s"])
                if name == "gateway":
                    delivery_rates.append(rate)
            if i:
                print(
                    f"round {i}: p50 gateway {latency['gateway'][-1]:.2f} ms, baseline "
                    f"{latency['baseline'][-1]:.2f} ms; accepted gateway {accepted['gateway'][-1]:,.0f}/s, "
                    f"baseline {accepted['baseline'][-1]:,.0f}/s; delivered {delivery_rates[-1]:,.0f}/s",
                    flush=True,
                )

        print()
        print(machine())
        print(f"{rounds} rounds; {sequential} sequential pushes and {duration_s:g} s at c={connections} each")
        print()
        rows = [
            Row(
                f"answer latency p50 ms, c=1, {PACE_S * 1000:.0f} ms apart",
                statistics.median(latency["gateway"]),
                statistics.median(latency["baseline"]),
                target=ADDED_LATENCY_MS,
                higher_is_better=False,
                added=True,
                kind="latency",
            ),
            Row(
                "answer latency p50 ms, c=1, back to back",
                statistics.median(unpaced["gateway"]),
                statistics.median(unpaced["baseline"]),
                higher_is_better=False,
                kind="latency",
            ),
            Row(
                f"pushes accepted/s, c={connections}",
                statistics.median(accepted["gateway"]),
                statistics.median(accepted["baseline"]),
                kind="throughput",
            ),
            Row(
                f"messages delivered/s, c={connections}",
                statistics.median(delivery_rates),
                statistics.median(accepted["baseline"]),
                kind="throughput",
            ),
        ]
        print_table(rows, ours="gateway", baseline="baseline")
    return rows


def suite(quick: bool) -> list[Row]:
    """The defaults, or for ``quick`` one round of 50 pushes one at a time and 2 s of load."""
    return run(1, 2.0, 16, 50) if quick else run(3, 5.0, 16, 300)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.forwarding",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load per round")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--sequential", type=int, default=300, help="pushes one at a time per round")
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--serve-subscriber", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--push-load", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--pace", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_baseline is not None:
        run_event_loop(serve([Listener(success_route(PATH), "127.0.0.1", args.serve_baseline)]))
    elif args.serve_subscriber is not None:
        run_event_loop(serve([Listener(subscriber_app(), "127.0.0.1", args.serve_subscriber)]))
    elif args.push_load is not None:
        pushes = [json.loads(line) for line in args.requests.read_text().splitlines()]
        report = asyncio.run(_push_load(args.push_load, pushes, args.connections, args.duration, args.pace))
        print(json.dumps(report))
    else:
        run(args.rounds, args.duration, args.connections, args.sequential)


if __name__ == "__main__":
    main()

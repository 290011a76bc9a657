"""Benchmark: push intake, against wechatpy's crypto and against a bare Litestar POST route (issue 7).

    python -m tests.bench.intake [--pushes 2000] [--crypto-rounds 7] [--rounds 5] [--duration 5]
                                 [--connections 16] [--skip crypto,http] [--profile FILE]

Every push is a ``component_verify_ticket`` for retail with a nonce of its own, encrypted and signed as
WeChat sends it (``gateway.simulator.pushes.envelope``): query parameters and the XML envelope.

  crypto  In this process, the same ``--pushes`` pushes, each from its envelope and signed parameters to its
          decrypted message. Ours: the gateway's own steps, ``pushes.read_envelope`` then
          ``pushes.decrypt_push`` (verify ``msg_signature``, decrypt, check the appid inside), with the
          platform's ``MessageCrypto``. Baseline: ``wechatpy.crypto.WeChatCrypto(token, encoding_aes_key,
          appid).decrypt_message(body, msg_signature, timestamp, nonce)``, which does the same (envelope
          by xmltodict). Both outputs are compared first. Rounds alternate which goes first; the figure is
          the median over the rounds of each round's ratio (ours / wechatpy pushes/s; target ≥ 1.5), the
          median pushes/s of each beside it. Also the same from the ``Encrypt`` value
          (the envelope read beforehand; wechatpy given a dict): the crypto alone.
  http    ``gateway serve`` (``_harness.deploy``) receives the pushes at ``POST /wechat/retail/events``:
          it checks the query, reads the envelope, verifies, decrypts, parses the event and stores the
          sealed ticket with the push that carried it (its replay guard) in a committed transaction
          before answering ``success``. The pushes of each round are made just before it, fresh and
          distinct, each ticket numbered; afterwards the stored ticket must be one of the round's last
          (wrk sends them in order), else the round is reported not valid. Baseline: a bare Litestar POST
          route on the same path (``_harness.success_route``) under the same ``gateway.http.serving.serve``.
          The load is wrk (one thread) POSTing the round's pushes in turn over ``--connections``; a
          warm-up round of each is discarded and rounds alternate which goes first. The figure is the
          median pushes/s (gateway / bare route; target ≥ 0.5).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import itertools
import pstats
import secrets
import sqlite3
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlencode

import httpx
from wechatpy.crypto import WeChatCrypto

from gateway.callbacks.pushes import PushParameters, decrypt_push, read_envelope
from gateway.cli.demo import demo_environment
from gateway.crypto import MessageCrypto, SecretBox
from gateway.http.serving import Listener, run_event_loop, serve
from gateway.simulator import SimComponent
from gateway.simulator.pushes import envelope
from gateway.simulator.state import Event
from tests.bench._harness import (
    COMPONENT_APPID,
    EXAMPLE,
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
    success_route,
    wait_for,
    write_posts,
)

PATH = "/wechat/retail/events"
CRYPTO_RATIO = 1.5
HTTP_RATIO = 0.5
PARTS = ("crypto", "http")

# Nonces are digits, as WeChat sends them, and never repeat within a run (nor, by the random start, across
# runs on one database): a repeated (msg_signature, nonce) is answered as a retry without being stored.
_nonces = itertools.count(secrets.randbelow(10**12) * 10**6)


# --- the pushes ------------------------------------------------------------------------------------


def retail(env: dict[str, str]) -> SimComponent:
    """The retail component as WeChat knows it: its token and key from the deployment's environment."""
    return SimComponent(COMPONENT_APPID, env["RETAIL_APPSECRET"], env["RETAIL_TOKEN"], env["RETAIL_AES_KEY"])


def make_pushes(component: SimComponent, count: int, label: str = "") -> list[tuple[dict[str, str], str]]:
    """``count`` ticket pushes, timestamped now, each with its own nonce and ticket: (query, envelope).
    The i-th ticket starts ``ticket@@@{label}{i:07d}.``, so that a stored ticket says which push it was."""
    now = int(time.time())
    pushes = []
    for i in range(count):
        ticket = f"ticket@@@{label}{i:07d}.{secrets.token_urlsafe(52)}"
        event = Event(component.appid, "component_verify_ticket", now, {"ComponentVerifyTicket": ticket})
        pushes.append(envelope(component, event, str(now), str(next(_nonces))))
    return pushes


# --- crypto: in this process -----------------------------------------------------------------------


Signed = tuple[bytes, PushParameters]


def _parameters(query: dict[str, str]) -> PushParameters:
    return PushParameters(query["msg_signature"], query["timestamp"], query["nonce"])


def _ours(crypto: MessageCrypto, pushes: Sequence[Signed]) -> None:
    for body, parameters in pushes:
        decrypt_push(crypto, parameters, read_envelope(body).encrypt)


def _theirs(wechat: WeChatCrypto, pushes: Sequence[Signed]) -> None:
    for body, p in pushes:
        wechat.decrypt_message(body, p.msg_signature, p.timestamp, p.nonce)


def _ours_encrypt(crypto: MessageCrypto, pushes: Sequence[tuple[str, PushParameters]]) -> None:
    for encrypt, parameters in pushes:
        decrypt_push(crypto, parameters, encrypt)


def _theirs_encrypt(wechat: WeChatCrypto, pushes: Sequence[tuple[str, PushParameters]]) -> None:
    for encrypt, p in pushes:
        wechat.decrypt_message({"Encrypt": encrypt}, p.msg_signature, p.timestamp, p.nonce)


def _rate(work: Callable[[], None], count: int) -> float:
    """Pushes per second of this thread's CPU time: on a shared machine, what other processes take of the
    cores does not count against either side."""
    gc.collect()
    started = time.thread_time()
    work()
    return count / (time.thread_time() - started)


def _alternating(pair: dict[str, Callable[[], None]], count: int, rounds: int) -> dict[str, list[float]]:
    """Pushes/s of each of the two in every round, the first of them going first in even rounds."""
    names = list(pair)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for work in pair.values():  # warm-up, discarded
        work()
    for i in range(rounds):
        for name in names if i % 2 == 0 else reversed(names):
            rates[name].append(_rate(pair[name], count))
    return rates


def run_crypto(count: int, rounds: int, profile_to: Path | None = None) -> list[Row]:
    env = demo_environment(EXAMPLE, {})
    component = retail(env)
    crypto = MessageCrypto(component.token, component.encoding_aes_key, component.appid)
    wechat = WeChatCrypto(component.token, component.encoding_aes_key, component.appid)
    made = make_pushes(component, count)
    pushes = [(body.encode(), _parameters(query)) for query, body in made]
    encrypts = [(read_envelope(body).encrypt, parameters) for body, parameters in pushes]
    for body, p in pushes:  # both read every push alike before any is timed
        ours = decrypt_push(crypto, p, read_envelope(body).encrypt)
        if ours.decode() != wechat.decrypt_message(body, p.msg_signature, p.timestamp, p.nonce):
            raise RuntimeError("the gateway and wechatpy decrypt a push differently")

    print(f"crypto: {count:,} pushes per round, {rounds} rounds after a warm-up, in this process", flush=True)
    whole = _alternating(
        {"ours": lambda: _ours(crypto, pushes), "wechatpy": lambda: _theirs(wechat, pushes)}, count, rounds
    )
    alone = _alternating(
        {
            "ours": lambda: _ours_encrypt(crypto, encrypts),
            "wechatpy": lambda: _theirs_encrypt(wechat, encrypts),
        },
        count,
        rounds,
    )
    paired_whole: list[float] = []
    for name, rates in (("push as POSTed", whole), ("Encrypt value", alone)):
        paired = [o / w for o, w in zip(rates["ours"], rates["wechatpy"], strict=True)]
        if rates is whole:
            paired_whole = paired
        print(
            f"  {name}: ours {', '.join(f'{r:,.0f}' for r in rates['ours'])} pushes/s; wechatpy "
            f"{', '.join(f'{r:,.0f}' for r in rates['wechatpy'])}; ratio of each round's pair "
            f"{', '.join(f'{r:.2f}' for r in paired)}"
        )
    # The figure is the median of each round's pair (ours / wechatpy, run back to back), which holds when
    # the machine's speed drifts between rounds; the medians of the rates are shown beside it.
    rows = [
        Row(
            "verify + decrypt, push as POSTed: rate ratio, median of the rounds' pairs",
            statistics.median(paired_whole),
            1.0,
            target=CRYPTO_RATIO,
        ),
        Row(
            "verify + decrypt, push as POSTed: pushes/s",
            statistics.median(whole["ours"]),
            statistics.median(whole["wechatpy"]),
            kind="throughput",
        ),
        Row(
            "verify + decrypt of the Encrypt value: pushes/s",
            statistics.median(alone["ours"]),
            statistics.median(alone["wechatpy"]),
            kind="throughput",
        ),
    ]
    print()
    print_table(rows, ours="ours", baseline="wechatpy")
    if profile_to is not None:
        for name, work in (
            ("ours", lambda: _ours(crypto, pushes)),
            ("wechatpy", lambda: _theirs(wechat, pushes)),
        ):
            profiler = cProfile.Profile()
            profiler.runcall(work)
            out = profile_to.with_name(f"{profile_to.stem}-crypto-{name}.txt")
            with out.open("w") as file:
                pstats.Stats(profiler, stream=file).sort_stats("tottime").print_stats(25)
            print(f"cProfile of {name}'s loop: {out}")
    return rows


# --- http: gateway serve against a bare route ------------------------------------------------------


def _stored_ticket(deployment: Deployment) -> str:
    """The verify ticket the gateway holds for retail, opened."""
    database = deployment.workdir / "gateway.db"
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as conn:
        query = "SELECT ticket_sealed FROM component_tickets WHERE platform_id = 'retail'"
        row = conn.execute(query).fetchone()
    box = SecretBox.from_base64(deployment.env["GATEWAY_SECRET_KEY"])
    return "" if row is None else box.open(row[0], context="ticket:retail")


def _check_stored(deployment: Deployment, label: str, answered: int, connections: int) -> None:
    """Warn unless the stored ticket is one of the last pushes of the round labelled ``label``: wrk sends
    the pushes in order, all ``answered`` were stored before their answers, and the newest stored is one of
    the last answered or of those still in flight when wrk stopped counting."""
    ticket = _stored_ticket(deployment).removeprefix("ticket@@@")
    index = int(ticket[len(label) : len(label) + 7]) if ticket.startswith(label) else -1
    if not answered - 2 * connections <= index < answered + 2 * connections:
        print(f"WARNING: {answered:,} answered, the stored ticket is push {index:,}; figures not valid")


def run_http(
    rounds: int, duration_s: float, connections: int, tool: str, profile_to: Path | None
) -> list[Row]:
    with deploy("bench-intake-") as deployment:
        gateway = deployment.gateways["gateway"]
        baseline_port = free_port()
        baseline_url = f"http://127.0.0.1:{baseline_port}"
        deployment.start("baseline", ["tests.bench.intake", "--serve-baseline", str(baseline_port)])
        wait_for(lambda: httpx.post(baseline_url + PATH).status_code == 200, what="the baseline")
        component = retail(deployment.env)
        urls = {"gateway": gateway.url, "baseline": baseline_url}
        pids = {"gateway": gateway.server.pid, "baseline": deployment.servers["baseline"].pid}
        cpu_ms: dict[str, list[float]] = {"gateway": [], "baseline": []}  # per push, each measured round
        for name, url in urls.items():  # each answers a push as WeChat expects
            ((query, body),) = make_pushes(component, 1)
            answer = httpx.post(f"{url}{PATH}", params=query, content=body.encode())
            if answer.status_code != 200 or answer.text != "success":
                raise RuntimeError(f"the {name} answers a push {answer.status_code} {answer.text!r}")
        posts_dir = deployment.workdir / "posts"
        posts_dir.mkdir()
        expected = {"gateway": 8000.0, "baseline": 8000.0}  # pushes/s, until the warm-up has measured them

        def load(name: str, label: str) -> Load:
            # Twice what the target took in its last round: enough that none is sent twice.
            count = max(1000, int(expected[name] * duration_s * 2))
            posts = posts_dir / f"{name}-{label}.posts"
            pushes = make_pushes(component, count, label=f"{label}.")
            write_posts(posts, ((f"{PATH}?{urlencode(q)}", body) for q, body in pushes))
            deployment.check_alive()
            cpu_before = cpu_seconds(pids[name])
            result = run_load(
                urls[name], headers={}, connections=connections, duration_s=duration_s, tool=tool, posts=posts
            )
            cpu_ms[name].append((cpu_seconds(pids[name]) - cpu_before) / max(result.requests, 1) * 1000)
            expected[name] = result.rps
            if result.requests > count:
                print(f"WARNING: {name} round {label}: {result.requests - count} pushes were sent twice")
            if name == "gateway":
                _check_stored(deployment, f"{label}.", result.requests, connections)
            posts.unlink()
            return result

        print(f"machine: {machine()}")
        print(
            f"http: {load_tool(tool)}, {connections} connections, {duration_s:g} s per round, "
            f"{rounds} rounds after a warm-up; POST {PATH}",
            flush=True,
        )
        for name in urls:  # warm-up, discarded
            load(name, "warm-up")
            cpu_ms[name].clear()
        results: dict[str, list[Load]] = {"gateway": [], "baseline": []}
        for i in range(rounds):
            for name in ("gateway", "baseline") if i % 2 == 0 else ("baseline", "gateway"):
                results[name].append(load(name, str(i + 1)))
            print(
                f"  round {i + 1}: gateway {results['gateway'][-1].rps:,.0f} pushes/s, "
                f"bare route {results['baseline'][-1].rps:,.0f} pushes/s",
                flush=True,
            )
        print(f"machine after: {machine()}")
        for name, loads in results.items():
            errors = sum(r.bad_status + r.socket_errors for r in loads)
            if errors:
                print(f"WARNING: {name}: {errors} failed requests; its figures are not valid")
        ours, base = median_load(results["gateway"]), median_load(results["baseline"])
        paired = [g.rps / b.rps for g, b in zip(results["gateway"], results["baseline"], strict=True)]
        rows = [
            Row(
                f"end to end: pushes/s, c={connections}",
                ours.rps,
                base.rps,
                target=HTTP_RATIO,
                kind="throughput",
            ),
            Row(
                "end to end: latency p50 ms", ours.p50_ms, base.p50_ms, higher_is_better=False, kind="latency"
            ),
            Row(
                "end to end: latency p99 ms", ours.p99_ms, base.p99_ms, higher_is_better=False, kind="latency"
            ),
            Row(
                "end to end: server CPU ms per push",
                statistics.median(cpu_ms["gateway"]),
                statistics.median(cpu_ms["baseline"]),
                higher_is_better=False,
                kind="cpu",
            ),
        ]
        print()
        print_table(rows, ours="gateway", baseline="bare route")
        print(
            f"ratio of each round's pair: {', '.join(f'{r:.2f}' for r in paired)} "
            f"(median {statistics.median(paired):.2f})"
        )
        if profile_to is not None:
            count = max(1000, int(expected["gateway"] * duration_s * 2))
            posts = posts_dir / "profile.posts"
            write_posts(
                posts, ((f"{PATH}?{urlencode(q)}", body) for q, body in make_pushes(component, count))
            )
            print()
            profile(
                gateway.server.pid,
                profile_to,
                gateway.url,
                headers={},
                connections=connections,
                duration_s=duration_s,
                tool=tool,
                posts=posts,
            )
    return rows


# --- the run ---------------------------------------------------------------------------------------


def run(
    *,
    pushes: int,
    crypto_rounds: int,
    rounds: int,
    duration_s: float,
    connections: int,
    tool: str = "auto",
    skip: Sequence[str] = (),
    profile_to: Path | None = None,
) -> list[Row]:
    rows: list[Row] = []
    if "crypto" not in skip:
        print(f"machine: {machine()}")
        rows += run_crypto(pushes, crypto_rounds, profile_to)
        print()
    if "http" not in skip:
        rows += run_http(rounds, duration_s, connections, tool, profile_to)
    return rows


def suite(quick: bool) -> list[Row]:
    """The defaults, or for ``quick`` 3 crypto rounds of 1,000 pushes and 2 HTTP rounds of 2 s."""
    if quick:
        return run(pushes=1000, crypto_rounds=3, rounds=2, duration_s=2.0, connections=16)
    return run(pushes=2000, crypto_rounds=7, rounds=5, duration_s=5.0, connections=16)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.intake",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--pushes", type=int, default=2000, help="pushes per crypto round (default 2,000)")
    parser.add_argument("--crypto-rounds", type=int, default=7, help="measured crypto rounds (default 7)")
    parser.add_argument(
        "--rounds", type=int, default=5, help="measured HTTP rounds of each server (default 5)"
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per HTTP round (default 5)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections (default 16)")
    parser.add_argument(
        "--load",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="load generator (auto: wrk if installed)",
    )
    parser.add_argument("--skip", default="", help="parts to leave out, comma-separated: crypto, http")
    parser.add_argument(
        "--profile",
        type=Path,
        help="cProfile both crypto loops (FILE-crypto-ours.txt, FILE-crypto-wechatpy.txt) and py-spy the "
        "gateway during one more HTTP round (FILE: .svg, .json or .txt)",
    )
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline is not None:
        run_event_loop(serve([Listener(success_route(PATH), "127.0.0.1", args.serve_baseline)]))
        return
    skip = {part.strip() for part in args.skip.split(",") if part.strip()}
    if skip - set(PARTS):
        parser.error("--skip: crypto, http")
    if (
        not 100 <= args.pushes <= 100_000
        or not 1 <= args.crypto_rounds <= 50
        or not 1 <= args.rounds <= 20
        or not 1 <= args.duration <= 60
        or not 1 <= args.connections <= 500
    ):
        parser.error(
            "--pushes 100..100,000, --crypto-rounds 1..50, --rounds 1..20, --duration 1..60 s, "
            "--connections 1..500"
        )
    run(
        pushes=args.pushes,
        crypto_rounds=args.crypto_rounds,
        rounds=args.rounds,
        duration_s=args.duration,
        connections=args.connections,
        tool=args.load,
        skip=sorted(skip),
        profile_to=args.profile,
    )


if __name__ == "__main__":
    main()

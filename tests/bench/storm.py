"""Benchmark: upstream token fetches per renewal under a storm (issue 7): exactly one.

    python -m tests.bench.storm [--rounds 5] [--callers 500] [--wx-share 0.2] [--upstream-delay-ms 100]
                                [--database-url postgresql+asyncpg://postgres@127.0.0.1:5432]

Three ``gateway serve`` replicas on one fresh PostgreSQL database (created for the run, dropped after),
WeChat played by one ``gateway simulate`` (its ticket and authorization pushes land on the first
replica). Five authorizers are authorized on the example registry's three components (one pinned, one on
two), and each token is fetched once. Every answer of ``api_component_token`` and
``api_authorizer_token`` is delayed by ``--upstream-delay-ms`` (WeChat is not instant, and the delay
widens the window in which callers pile up on a renewal).

Each round:

1. no request for ``CACHE_S`` + 0.5 s, so no replica holds a token in memory;
2. a load process (``--load``, asyncio on raw keep-alive sockets) opens ``--callers`` connections, spread
   round robin over the three replicas, and waits;
3. every token expires at WeChat (``POST /sim/expire {"what": "all"}``), the simulator's counters are
   reset, and every component and authorizer token is made due in the shared store (``expires_at = 1``,
   ``renew_after = 0``, as ``tests/test_replicas.py`` does), so the background renewers may join in;
4. the storm: each connection sends one request at the same moment. Caller ``i`` asks replica ``i % 3``
   for authorizer ``i % 5`` (all 15 pairs); a ``--wx-share`` of them call the ``/wx`` proxy
   (``cgi-bin/user/get`` with a gateway token), the others ``GET /v1/authorizers/{appid}/access-token``;
5. the simulator's counters: fetches of each component token and each authorizer token (8 in all);
6. the same burst again on the same connections, now on warm caches: the baseline of the latencies.

Figures: upstream fetches per token per renewal, mean and maximum over every token and round (target:
exactly 1, so ≤ 1.00 against the ideal of 1); distinct tokens handed out per authorizer in a storm
(1); calls that failed (none may); storm latency p50/p99/max against the warm burst's (no target). A
call fails unless it answers 200, with a token for ``/v1`` and without a WeChat errcode for ``/wx``.
Nothing is asserted; figures that miss a target say FAIL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from tests.bench._harness import (
    AUTHORIZER,
    CLIENT_KEY,
    COMPONENT_APPID,
    ROOT,
    Deployment,
    Row,
    deploy,
    machine,
    print_table,
    wait_for,
)
from tests.support.flows import approve_authorization, push_ticket

POSTGRES = os.environ.get("GATEWAY_TEST_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432")
REPLICAS = 3
CACHE_S = 5.0  # TokenService's cache_s: how long a replica reuses a token it read from the store
COMPONENTS = {"retail": COMPONENT_APPID, "finance": "wxc0mp000000002", "services": "wxc0mp000000003"}
# authorizer appid -> (the platform serving its tokens, {platform: permission sets}), as in
# tests/test_replicas.py; exclusive sets (4, 18, 24) go to one component each, the example registry pins
# wxb0000000000002 to finance. The first is authorized by `deploy` already.
AUTHORIZERS: dict[str, tuple[str, dict[str, list[int]]]] = {
    AUTHORIZER: ("retail", {"retail": [1, 2, 24]}),
    "wxa0000000000002": ("finance", {"finance": [1, 2, 4]}),
    "wxa0000000000003": ("services", {"services": [1, 2, 18]}),
    "wxa0000000000004": ("retail", {"retail": [1, 2, 15], "finance": [1, 2, 24]}),
    "wxb0000000000002": ("finance", {"retail": [1, 2, 4], "finance": [1, 2, 24]}),
}
BEARER = {"Authorization": f"Bearer {CLIENT_KEY}"}
# The authorizer tokens a storm asks for; those of an account's other component (stored when it was
# authorized: api_query_auth returns one) stay valid and out of it.
_STORM_KEYS = [f"authorizer:{platform}:{appid}" for appid, (platform, _) in AUTHORIZERS.items()]
RENEWED = re.compile(r"renewed\b.*?\b((?:component|authorizer):[\w:-]+)")


# --- the load: one process, one request per connection per burst --------------------------------------


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    """One HTTP/1.1 request on a keep-alive connection: status and body (Content-Length or chunked)."""
    writer.write(request)
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    headers = {name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in head[1:])}
    if "content-length" in headers:
        return status, await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        await reader.readuntil(b"\r\n")
        return status, bytes(body)
    raise ValueError(f"an answer without Content-Length or chunks: {head[0]}")


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _one_call(
    start: asyncio.Event, connections: list[Connection | None], i: int, request: bytes, timeout_s: float
) -> dict[str, Any]:
    """Connection ``i`` sends its request once ``start`` is set: status, latency from the send, body."""
    await start.wait()
    connection = connections[i]
    if connection is None:
        return {"status": 0, "ms": 0.0, "body": "no connection"}
    began = time.perf_counter()
    try:
        status, body = await asyncio.wait_for(_exchange(*connection, request), timeout_s)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, TimeoutError) as exc:
        connections[i] = None
        return {"status": 0, "ms": (time.perf_counter() - began) * 1e3, "body": repr(exc)}
    return {"status": status, "ms": (time.perf_counter() - began) * 1e3, "body": body.decode()}


async def _storm_load(urls: list[str], headers: dict[str, str], timeout_s: float) -> None:
    """Open a connection per URL, say ``ready``; for each ``go`` line on stdin, send every URL at once
    (one request per connection) and print one JSON line: per call its status, latency and body."""
    requests: list[bytes] = []
    for url in urls:
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [
            f"GET {target} HTTP/1.1",
            f"Host: {parts.netloc}",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        requests.append(("\r\n".join([*lines, "", ""])).encode("latin-1"))
    opened = await asyncio.gather(
        *(asyncio.open_connection(urlsplit(url).hostname, urlsplit(url).port) for url in urls),
        return_exceptions=True,
    )
    connections: list[Connection | None] = [None if isinstance(c, BaseException) else c for c in opened]
    print(json.dumps({"ready": sum(c is not None for c in connections)}), flush=True)
    loop = asyncio.get_running_loop()
    while (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "go":
        start = asyncio.Event()
        tasks = [
            asyncio.create_task(_one_call(start, connections, i, requests[i], timeout_s))
            for i in range(len(urls))
        ]
        await asyncio.sleep(0)  # every task waits on the start
        began = time.perf_counter()
        start.set()
        calls = await asyncio.gather(*tasks)
        print(json.dumps({"seconds": time.perf_counter() - began, "calls": calls}), flush=True)
    for connection in connections:
        if connection is not None:
            connection[1].close()


class LoadProcess:
    """``python -m tests.bench.storm --load SPEC``: connected, waiting for ``burst``."""

    def __init__(self, spec: Path) -> None:
        command = [sys.executable, "-m", "tests.bench.storm", "--load", str(spec)]
        self.proc = subprocess.Popen(
            command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self.connected = int(self._line()["ready"])

    def _line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the load process ended ({self.proc.wait()}) without an answer")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def burst(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return self._line()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# --- the database ---------------------------------------------------------------------------------------


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


def _sql(dsn: str, statement: str, *args: object) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(statement, *args)
        finally:
            await conn.close()

    asyncio.run(run())


@contextmanager
def fresh_database(server: str, prefix: str) -> Iterator[str]:
    """A new, uniquely named PostgreSQL database on ``server`` (its URL), dropped afterwards."""
    server = server.rstrip("/")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    _sql(f"{_dsn(server)}/postgres", f'CREATE DATABASE "{name}"')
    try:
        yield f"{server}/{name}"
    finally:
        _sql(f"{_dsn(server)}/postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- the run --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One caller of the storm: which replica it asks, for which authorizer, through which route."""

    replica: int
    appid: str
    route: str  # "v1" or "wx"


@dataclass
class Burst:
    seconds: float
    latencies_ms: list[float]
    failures: Counter[str]
    tokens: dict[str, set[str]]  # per authorizer, the tokens /v1 handed out

    @classmethod
    def of(cls, answer: dict[str, Any], calls: Sequence[Call]) -> Burst:
        failures: Counter[str] = Counter()
        tokens: dict[str, set[str]] = {}
        for call, result in zip(calls, answer["calls"], strict=True):
            problem = _problem(call, result["status"], result["body"], tokens)
            if problem:
                failures[problem] += 1
        return cls(answer["seconds"], [r["ms"] for r in answer["calls"]], failures, tokens)

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _problem(call: Call, status: int, body: str, tokens: dict[str, set[str]]) -> str | None:
    """Why a call failed (None if it did not); a token handed out by /v1 is added to ``tokens``."""
    if status != 200:
        return f"{call.route} {status} {body[:160]}"
    try:
        answer = json.loads(body)
    except ValueError:
        return f"{call.route} 200, not JSON: {body[:120]}"
    if call.route == "wx":
        return f"wx errcode {answer['errcode']}" if answer.get("errcode", 0) != 0 else None
    if answer.get("authorizer_appid") != call.appid or answer.get("platform") != AUTHORIZERS[call.appid][0]:
        return f"v1 answered for {answer.get('authorizer_appid')} on {answer.get('platform')}"
    tokens.setdefault(call.appid, set()).add(answer["access_token"])
    return None


@dataclass
class Round:
    storm: Burst
    warm: Burst
    fetches: dict[str, int]  # token (component or authorizer appid) -> upstream fetches
    renewals_logged: Counter[str] = field(default_factory=Counter)


def _authorize_the_rest(deployment: Deployment) -> None:
    """Tickets for finance and services, then every authorization of ``AUTHORIZERS`` not yet made."""

    async def run() -> None:
        async with httpx.AsyncClient(base_url=deployment.simulator_url, timeout=30) as sim:
            for platform, component_appid in COMPONENTS.items():
                if platform != "retail":  # deploy pushed retail's
                    pushed = await push_ticket(sim, component_appid)
                    if pushed.get("body") != "success":
                        raise RuntimeError(f"the gateway refused {platform}'s ticket: {pushed}")
            for appid, (_, grants) in AUTHORIZERS.items():
                for platform, func_ids in grants.items():
                    if appid == AUTHORIZER and platform == "retail":
                        continue
                    secret = deployment.env[f"{platform.upper()}_APPSECRET"]
                    approval = await approve_authorization(sim, COMPONENTS[platform], secret, appid, func_ids)
                    push = approval["push"]
                    if push is None or push.get("body") != "success":
                        raise RuntimeError(f"the authorization push of {appid} failed: {approval}")

    asyncio.run(run())


def _serving(url: str, appid: str) -> bool:
    answer = httpx.get(f"{url}/v1/authorizers/{appid}/access-token", headers=BEARER, timeout=10)
    return answer.status_code == 200 and answer.json()["platform"] == AUTHORIZERS[appid][0]


def _gateway_token(url: str, appid: str) -> str:
    query = urlencode({"grant_type": "client_credential", "appid": appid, "secret": CLIENT_KEY})
    answer = httpx.get(f"{url}/wx/cgi-bin/token?{query}", timeout=10).json()
    if "access_token" not in answer:
        raise RuntimeError(f"no gateway token for {appid}: {answer}")
    token: str = answer["access_token"]
    return token


def callers(count: int, wx_share: float) -> list[Call]:
    """Caller ``i``: replica ``i % 3``, authorizer ``i % 5``, in blocks of 15 (every pair once); one block
    in ``1 / wx_share`` goes through /wx, the others to /v1."""
    appids = list(AUTHORIZERS)
    per_block = len(appids) * REPLICAS
    every = round(1 / wx_share) if wx_share > 0 else 0
    return [
        Call(i % REPLICAS, appids[i % len(appids)], "wx" if every and (i // per_block) % every == 0 else "v1")
        for i in range(count)
    ]


def _log_sizes(deployment: Deployment) -> list[int]:
    return [g.server.log.stat().st_size for g in deployment.gateways.values()]


def _renewals_logged(deployment: Deployment, marks: Sequence[int]) -> Counter[str]:
    logged: Counter[str] = Counter()
    for gateway, mark in zip(deployment.gateways.values(), marks, strict=True):
        with gateway.server.log.open("rb") as log:
            log.seek(mark)
            logged.update(RENEWED.findall(log.read().decode(errors="replace")))
    return logged


def measure(
    *, rounds: int, count: int, wx_share: float, delay_ms: float, server: str, verbose: bool = True
) -> list[Round]:
    def say(text: str) -> None:
        if verbose:
            print(text, flush=True)

    with fresh_database(server, "bench_storm") as database:
        env = {"GATEWAY_DATABASE_URL": database, "GATEWAY_CATALOG_SYNC_INTERVAL_S": "0"}
        replicas = {f"replica-{i + 1}": env for i in range(REPLICAS)}
        with deploy("bench-storm-", replicas) as deployment:
            urls = [g.url for g in deployment.gateways.values()]
            _authorize_the_rest(deployment)
            for appid in AUTHORIZERS:  # the first replica acted on the pushes; every token fetched once
                wait_for(
                    lambda appid=appid: _serving(urls[0], appid), timeout=30, what=f"a token for {appid}"
                )
            gateway_tokens = {appid: _gateway_token(urls[0], appid) for appid in AUTHORIZERS}
            last_request = time.monotonic()
            with httpx.Client(base_url=deployment.simulator_url, timeout=30) as sim:
                if delay_ms > 0:
                    for endpoint in ("api_component_token", "api_authorizer_token"):
                        fault = {"endpoint": endpoint, "delay_s": delay_ms / 1e3}
                        sim.post("/sim/faults", json=fault).raise_for_status()
                plan = callers(count, wx_share)
                spec = [
                    f"{urls[c.replica]}/v1/authorizers/{c.appid}/access-token"
                    if c.route == "v1"
                    else f"{urls[c.replica]}/wx/cgi-bin/user/get?access_token={gateway_tokens[c.appid]}"
                    for c in plan
                ]
                spec_file = deployment.workdir / "storm.json"
                spec_file.write_text(json.dumps({"urls": spec, "headers": BEARER, "timeout_s": 60}))
                through_wx = sum(c.route == "wx" for c in plan)
                say(
                    f"storm: {len(plan)} callers on {REPLICAS} replicas ({through_wx} "
                    f"through /wx), {len(AUTHORIZERS)} authorizers on {len(COMPONENTS)} components, WeChat's "
                    f"token answers delayed {delay_ms:g} ms; {rounds} rounds"
                )
                results: list[Round] = []
                for number in range(1, rounds + 1):
                    deployment.check_alive()
                    time.sleep(max(0.0, last_request + CACHE_S + 0.5 - time.monotonic()))
                    load = LoadProcess(spec_file)
                    try:
                        if load.connected != len(plan):
                            raise RuntimeError(f"the load process connected {load.connected} of {len(plan)}")
                        sim.post("/sim/expire", json={"what": "all"}).raise_for_status()
                        sim.post("/sim/counters/reset").raise_for_status()
                        marks = _log_sizes(deployment)
                        _sql(
                            _dsn(database),
                            "UPDATE credentials SET expires_at = 1, renew_after = 0 "
                            "WHERE key LIKE 'component:%' OR key = ANY($1::text[])",
                            _STORM_KEYS,
                        )
                        storm = Burst.of(load.burst(), plan)
                        counters = sim.get("/sim/counters").json()
                        warm = Burst.of(load.burst(), plan)
                    finally:
                        load.close()
                        last_request = time.monotonic()
                    fetches = {
                        key: n
                        for endpoint in ("api_component_token", "api_authorizer_token")
                        for key, n in counters.get(endpoint, {"by_key": {}})["by_key"].items()
                    }
                    time.sleep(0.5)  # the log lines of the last renewals
                    result = Round(storm, warm, fetches, _renewals_logged(deployment, marks))
                    results.append(result)
                    say(_round_line(number, result))
    return results


def _expected_tokens() -> list[str]:
    return [*COMPONENTS.values(), *AUTHORIZERS]


def _round_line(number: int, r: Round) -> str:
    counts = [r.fetches.get(key, 0) for key in _expected_tokens()]
    extra = sorted(set(r.fetches) - set(_expected_tokens()))
    distinct = [len(r.storm.tokens.get(appid, ())) for appid in AUTHORIZERS]
    failed = sum(r.storm.failures.values()) + sum(r.warm.failures.values())
    text = (
        f"  round {number}: fetches per token {counts}{f' and of {extra}' if extra else ''}; renewals "
        f"logged {sum(r.renewals_logged.values())}; distinct tokens per authorizer {distinct}; storm "
        f"{r.storm.seconds:.2f} s, p50 {r.storm.percentile(50):.0f} ms, p99 {r.storm.percentile(99):.0f} "
        f"ms; warm p50 {r.warm.percentile(50):.0f} ms, p99 {r.warm.percentile(99):.0f} ms; failed {failed}"
    )
    for problem, n in (r.storm.failures + r.warm.failures).most_common(5):
        text += f"\n    {n} × {problem}"
    return text


def rows(results: Sequence[Round]) -> list[Row]:
    per_token = [r.fetches.get(key, 0) for r in results for key in _expected_tokens()]
    unexpected = sum(n for r in results for key, n in r.fetches.items() if key not in _expected_tokens())
    mean = (sum(per_token) + unexpected) / len(per_token)
    distinct = max(len(r.storm.tokens.get(appid, ())) for r in results for appid in AUTHORIZERS)
    failed = sum(sum(r.storm.failures.values()) + sum(r.warm.failures.values()) for r in results)
    calls = sum(len(r.storm.latencies_ms) + len(r.warm.latencies_ms) for r in results)

    def median(burst: str, p: float) -> float:
        return statistics.median(getattr(r, burst).percentile(p) for r in results)

    return [
        Row("upstream fetches per token per renewal (mean)", mean, 1.0, target=1.0, higher_is_better=False),
        Row(
            "upstream fetches per token per renewal (max)",
            max(per_token),
            1.0,
            target=1.0,
            higher_is_better=False,
        ),
        Row(
            "distinct tokens per authorizer in a storm (max)",
            distinct,
            1.0,
            target=1.0,
            higher_is_better=False,
        ),
        Row("calls failed (of every call)", failed, calls, target=0.0, higher_is_better=False),
        Row("storm latency p50 ms (vs warm caches)", median("storm", 50), median("warm", 50)),
        Row("storm latency p99 ms (vs warm caches)", median("storm", 99), median("warm", 99)),
        Row("storm latency max ms (vs warm caches)", median("storm", 100), median("warm", 100)),
    ]


def suite(quick: bool) -> list[Row]:
    """The issue's figures; ``quick``: 2 rounds of 150 callers instead of 5 of 500."""
    results = measure(
        rounds=2 if quick else 5,
        count=150 if quick else 500,
        wx_share=0.2,
        delay_ms=100.0,
        server=POSTGRES,
    )
    return rows(results)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.storm",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=5, help="storms, each on freshly expired tokens (5)")
    parser.add_argument("--callers", type=int, default=500, help="concurrent callers of each storm (500)")
    parser.add_argument(
        "--wx-share", type=float, default=0.2, help="share of callers going through /wx (0.2)"
    )
    parser.add_argument(
        "--upstream-delay-ms", type=float, default=100.0, help="WeChat's delay on token answers (100 ms)"
    )
    parser.add_argument(
        "--database-url",
        metavar="SERVER",
        default=POSTGRES,
        help=f"the PostgreSQL server; a fresh database is created on it and dropped after ({POSTGRES})",
    )
    parser.add_argument("--quick", action="store_true", help="2 rounds of 150 callers: a smoke run")
    parser.add_argument("--load", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load is not None:
        spec = json.loads(args.load.read_text())
        asyncio.run(_storm_load(spec["urls"], spec["headers"], spec["timeout_s"]))
        return
    if args.quick:
        args.rounds, args.callers = 2, 150
    if not 1 <= args.rounds <= 50 or not 15 <= args.callers <= 5000 or not 0 <= args.wx_share <= 0.5:
        parser.error("--rounds 1..50, --callers 15..5000, --wx-share 0..0.5")
    if not args.database_url.startswith("postgresql"):
        parser.error("--database-url: a PostgreSQL server (postgresql+asyncpg://user@host:port)")
    print(f"machine: {machine()}", flush=True)
    results = measure(
        rounds=args.rounds,
        count=args.callers,
        wx_share=args.wx_share,
        delay_ms=args.upstream_delay_ms,
        server=args.database_url,
    )
    print(f"machine after: {machine()}")
    print()
    print_table(rows(results), baseline="ideal / warm")


if __name__ == "__main__":
    main()

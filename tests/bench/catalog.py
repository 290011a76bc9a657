"""Benchmark: the catalog at scale (issue 6, item 4): filtered pages, the CSV export, a sync.

    python -m tests.bench.catalog [--authorizers 100000] [--rounds 3] [--connections 1] [--depth 3]
                                  [--sync-authorizers 10000] [--concurrency 16] [--latency-ms 50]
                                  [--database-url postgresql+asyncpg://postgres@127.0.0.1:5432]
                                  [--skip pages,csv,sync] [--profile FILE]

The registry is the example registry with two more platforms (``logistics``, ``media``): five components,
generated secrets. Every gateway runs ``gateway serve`` with the scheduled sync off. Three parts:

  pages  ``--authorizers`` accounts (100,000) on 1–3 of the five platforms (~135,000 authorizations, a
         mix of kinds, statuses, binding states, token health, names and principals) are written straight
         into a fresh database (SQLite in a temporary directory, or a new PostgreSQL database on the
         ``--database-url`` server) with SQLAlchemy core. Then ``GET /v1/catalog`` with the auditors' key
         over ten filters (none; platform; kind; status; binding; three at once; ``q`` on a name, a
         principal, an appid, and one that matches nothing), each followed ``--depth`` pages down its
         cursor. The load is another process walking those URLs with ``--connections`` keep-alive
         connections (default 1: one auditor after another). Baseline: a bare Litestar route under the
         same ``gateway.http.serving.serve`` answering each URL with the very bytes the gateway answered
         (no database). A warm-up pass of each is discarded; rounds alternate which goes first; p50/p95 are
         medians over the rounds. Target: p95 ≤ 50 ms.
  csv    ``GET /v1/catalog.csv`` of the whole catalog, streamed by the client and discarded, after the
         pages. The gateway's peak RSS over the export (VmHWM, reset to the current RSS just before
         through /proc/PID/clear_refs; sampled VmRSS where that is not allowed) less its RSS before.
         Target: ≤ 50 MB added.
  sync   ``gateway simulate`` seeded with ``--sync-authorizers`` accounts (10,000) on the five components,
         every WeChat call answered after ``--latency-ms`` (a ``*`` ``delay_s`` fault), then
         ``gateway catalog sync --concurrency 16`` as a process on a fresh database (a ``gateway serve``
         on it receives the component tickets). Its calls are the simulator's counters (reset before):
         lists, component and authorizer tokens, infos, open/get and open/have. Bound: calls × latency
         / concurrency; target: the command's wall time ≤ 1.3 × the bound.

Nothing is asserted; figures that miss a target say FAIL.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from litestar import Litestar, Request, Response, get

from gateway.cli.demo import demo_environment
from gateway.http.serving import Listener, run_event_loop, serve
from tests.bench._harness import (
    EXAMPLE,
    ROOT,
    Deployment,
    Row,
    cpu_seconds,
    free_port,
    machine,
    print_table,
    wait_for,
)

PAGE_P95_MS = 50.0
CSV_ADDED_MB = 50.0
SYNC_RATIO = 1.3
AUDIT_KEY = "demo-audit-key"  # the example registry's public demo key of client "audit" (scope catalog)
GROUP_OPEN = "wx0pen0000000001"  # the example registry's group.open_appid
OTHER_OPENS = ("wx0ther000000001", "wx0ther000000002", "wx0ther000000003")
# (id, name, component_appid): the example registry's three, then two more.
PLATFORMS = (
    ("retail", "Retail services platform", "wxc0mp000000001"),
    ("finance", "Finance services platform", "wxc0mp000000002"),
    ("services", "Shared services platform", "wxc0mp000000003"),
    ("logistics", "Logistics services platform", "wxc0mp000000004"),
    ("media", "Media services platform", "wxc0mp000000005"),
)
MANAGE_SET = {"official_account": 24, "mini_program": 25}  # open/get: exclusive to one component
HAVE_SET = {"official_account": 3, "mini_program": 30}  # open/have
BASE_SETS = {"official_account": [1, 2, 7, 11], "mini_program": [17, 18, 19]}
CITIES: tuple[str, ...] = ("上海", "北京", "杭州", "深圳", "广州", "成都", "南京", "武汉")
CITIES += ("Suzhou", "Xiamen", "Tianjin", "Qingdao")
TRADES: tuple[str, ...] = (
    "零售",
    "咖啡",
    "物流",
    "保险",
    "银行",
    "酒店",
    "Coffee",
    "Logistics",
    "Retail",
    "Fashion",
)
TRADES += ("Travel",)
# The filters of the page benchmark; {appid} is filled with a fragment of a seeded appid.
FILTERS: tuple[tuple[str, dict[str, str]], ...] = (
    ("none", {}),
    ("platform", {"platform": "finance"}),
    ("kind", {"kind": "mini_program"}),
    ("status", {"status": "reauthorization_required"}),
    ("binding", {"binding": "bound_elsewhere"}),
    ("three", {"platform": "retail", "kind": "official_account", "binding": "unbound"}),
    ("q name", {"q": "杭州"}),
    ("q principal", {"q": "coffee xiamen"}),
    ("q appid", {"q": "{appid}"}),
    ("q no match", {"q": "no such account"}),
)
ENV_PREFIXES = ("GATEWAY_", *(f"{p[0].upper()}_" for p in PLATFORMS))


# --- the registry and the databases ----------------------------------------------------------------


def registry_text(api_base: str) -> str:
    """The example registry with ``api_base`` and two more platforms after its three."""
    example = EXAMPLE.read_text().replace("http://127.0.0.1:8001", api_base)
    head, marker, tail = example.partition("\n# Internal apps and auditors.")
    if not marker or "id: services" not in head:
        raise RuntimeError(f"{EXAMPLE} no longer has the layout this benchmark extends")
    extra = "".join(
        f"\n  - id: {pid}\n    name: {name}\n    component_appid: {appid}\n"
        f"    component_appsecret: ${{{pid.upper()}_APPSECRET}}\n    token: ${{{pid.upper()}_TOKEN}}\n"
        f"    encoding_aes_key: ${{{pid.upper()}_AES_KEY}}\n"
        for pid, name, appid in PLATFORMS[3:]
    )
    return head.rstrip("\n") + "\n" + extra + marker + tail


class Databases:
    """Fresh databases: SQLite files in ``workdir``, or new databases on a PostgreSQL server (dropped)."""

    def __init__(self, workdir: Path, server: str | None) -> None:
        self._workdir = workdir
        self._server = server.rstrip("/") if server else None
        self._created: list[str] = []

    def new(self, name: str) -> str:
        if self._server is None:
            return f"sqlite+aiosqlite:///{self._workdir / f'{name}.db'}"
        database = f"bench_catalog_{uuid.uuid4().hex[:10]}_{name}"
        asyncio.run(self._admin(f'CREATE DATABASE "{database}"'))
        self._created.append(database)
        return f"{self._server}/{database}"

    def drop(self) -> None:
        for database in self._created:
            asyncio.run(self._admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))

    async def _admin(self, statement: str) -> None:
        import asyncpg  # only with --database-url

        assert self._server is not None
        conn = await asyncpg.connect(
            self._server.replace("postgresql+asyncpg://", "postgresql://") + "/postgres"
        )
        try:
            await conn.execute(statement)
        finally:
            await conn.close()


def _appid(i: int) -> str:
    """A distinct appid per ``i``, spread over the keyspace (an odd multiplier is a bijection mod 2^64)."""
    return f"wx{(i * 0x9E3779B97F4A7C15 + 0x5BD1E995) % 2**64:016x}"


def _fake_sealed(rng: random.Random, plaintext_bytes: int) -> str:
    """Random bytes of a sealed value's size (``v1.`` + nonce, ciphertext, tag): never opened here."""
    return "v1." + base64.urlsafe_b64encode(rng.randbytes(12 + plaintext_bytes + 16)).decode()


@dataclass
class Seeded:
    authorizers: int
    authorizations: int
    credentials: int
    seconds: float
    sample_appid: str


def seed_catalog(url: str, count: int, seed: int = 6) -> Seeded:
    """Schema by the migrations, then ``count`` accounts' authorizations, profiles and token rows."""
    return asyncio.run(_seed_catalog(url, count, seed))


async def _seed_catalog(url: str, count: int, seed: int) -> Seeded:
    from sqlalchemy import insert, text

    from gateway.store import create_engine, upgrade
    from gateway.store.tables import Authorization, AuthorizerProfileRow, Credential

    started = time.monotonic()
    rng = random.Random(seed)
    now = time.time()
    platform_ids = [p[0] for p in PLATFORMS]
    authorizations: list[dict[str, Any]] = []
    profiles: list[dict[str, Any]] = []
    credentials: list[dict[str, Any]] = []
    for i in range(count):
        kind = "mini_program" if rng.random() < 0.4 else "official_account"
        appid = _appid(i)
        where = rng.sample(platform_ids, rng.choices((1, 2, 3), (70, 25, 5))[0])
        manage_on = rng.choice(where) if rng.random() < 0.6 else None
        for platform_id in where:
            status = rng.choices(("active", "revoked", "reauthorization_required"), (88, 8, 4))[0]
            sets = list(BASE_SETS[kind])
            if platform_id == manage_on:
                sets.append(MANAGE_SET[kind])
            elif rng.random() < 0.3:
                sets.append(HAVE_SET[kind])
            authorized_at = now - rng.uniform(3600, 3 * 365 * 86400)
            authorizations.append(
                {
                    "platform_id": platform_id,
                    "authorizer_appid": appid,
                    "refresh_token_sealed": None if status == "revoked" else _fake_sealed(rng, 57),
                    "func_ids": ",".join(str(s) for s in sorted(sets)),
                    "status": status,
                    "authorized_at": authorized_at,
                    "updated_at": authorized_at,
                    "revoked_at": now - rng.uniform(0, 86400 * 30) if status == "revoked" else None,
                }
            )
            if status == "active" and rng.random() < 0.7:  # a token was fetched for it
                expires_at = now + rng.uniform(1800, 7000)
                health = rng.random()
                credentials.append(
                    {
                        "key": f"authorizer:{platform_id}:{appid}",
                        "value_sealed": _fake_sealed(rng, 150),
                        "expires_at": expires_at,
                        "renew_after": expires_at - 600,
                        "fetched_at": expires_at - 7200,
                        "problem": "WeChat api_authorizer_token answered errcode 61023"
                        if health < 0.02
                        else None,
                        "blocked_until": now + 86400 if 0.02 <= health < 0.03 else None,
                    }
                )
        if rng.random() < 0.02:  # authorized, never synced: no profile
            continue
        city, trade = rng.choice(CITIES), rng.choice(TRADES)
        binding = rng.choices(("bound", "bound_elsewhere", "unbound", "unknown"), (55, 5, 20, 20))[0]
        open_appid = {"bound": GROUP_OPEN, "bound_elsewhere": rng.choice(OTHER_OPENS)}.get(binding)
        if city.isascii():
            principal = f"ACME {trade} {city} {rng.randrange(400)} Co., Ltd."
        else:
            principal = f"{city}{trade}{rng.randrange(400)}号有限公司"
        profiles.append(
            {
                "authorizer_appid": appid,
                "kind": kind,
                "nick_name": f"{city}{trade} {i}" if kind == "official_account" else f"{trade}小程序 {i}",
                "principal_name": principal,
                "user_name": f"gh_{appid[2:14]}",
                "verify_type": rng.choice((0, 0, 0, -1)),
                "service_type": 0 if kind == "mini_program" else 2,
                "account_status": 1,
                "synced_at": now - rng.uniform(0, 86400),
                "binding": binding,
                "open_appid": open_appid,
                "binding_checked_at": now - rng.uniform(0, 86400),
            }
        )
    engine = create_engine(url)
    try:
        # The rows go in before migration 0008, which derives the catalog entries from them as it would
        # on an existing deployment's upgrade.
        await upgrade(engine, "0007")
        async with engine.begin() as conn:
            for table, rows in (
                (Authorization.__table__, authorizations),  # type: ignore[attr-defined]
                (AuthorizerProfileRow.__table__, profiles),  # type: ignore[attr-defined]
                (Credential.__table__, credentials),  # type: ignore[attr-defined]
            ):
                for start in range(0, len(rows), 5000):
                    await conn.execute(insert(table), rows[start : start + 5000])
        await upgrade(engine)
        if engine.dialect.name == "postgresql":  # as autovacuum would shortly after a bulk load
            async with engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(text("ANALYZE"))
    finally:
        await engine.dispose()
    return Seeded(
        count,
        len(authorizations),
        len(credentials),
        time.monotonic() - started,
        profiles[len(profiles) // 3]["authorizer_appid"],
    )


# --- the page load: another process walking URLs ---------------------------------------------------


async def _walk(
    base: str, paths: Sequence[str], headers: Mapping[str, str], connections: int, passes: int
) -> dict[str, Any]:
    """Each URL ``passes`` times over ``connections`` keep-alive connections; latency of each request."""
    parts = urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    extra = [f"{name}: {value}" for name, value in headers.items()]
    requests = [
        "\r\n".join([f"GET {path} HTTP/1.1", f"Host: {parts.netloc}", *extra, "", ""]).encode()
        for path in paths
    ]
    queue = [i for _ in range(passes) for i in range(len(paths))]
    queue.reverse()
    latencies: list[list[float]] = [[] for _ in paths]
    tally = {"bad_status": 0, "socket_errors": 0}

    async def connection() -> None:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            tally["socket_errors"] += 1
            return
        try:
            while queue:
                index = queue.pop()
                started = time.perf_counter()
                writer.write(requests[index])
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                status = int(lines[0].split(" ", 2)[1])
                length = next(
                    int(line.split(":", 1)[1])
                    for line in lines[1:]
                    if line.lower().startswith("content-length:")
                )
                await reader.readexactly(length)
                latencies[index].append((time.perf_counter() - started) * 1e3)
                if status != 200:
                    tally["bad_status"] += 1
        except (OSError, asyncio.IncompleteReadError, ValueError, StopIteration):
            tally["socket_errors"] += 1
        finally:
            writer.close()

    started = time.monotonic()
    await asyncio.gather(*(connection() for _ in range(connections)))
    return {"latencies_ms": latencies, "duration_s": time.monotonic() - started, **tally}


def _load_main(spec_file: Path) -> None:
    spec = json.loads(spec_file.read_text())
    result = asyncio.run(
        _walk(spec["base"], spec["paths"], spec["headers"], spec["connections"], spec["passes"])
    )
    print(json.dumps(result))


@dataclass(frozen=True)
class Walk:
    """One round of page requests on one server: each URL's latencies, in ms."""

    latencies_ms: list[list[float]]
    duration_s: float
    bad_status: int
    socket_errors: int

    @property
    def all_ms(self) -> list[float]:
        return [x for per_url in self.latencies_ms for x in per_url]

    @property
    def requests(self) -> int:
        return len(self.all_ms)


def walk(base: str, paths: Sequence[str], workdir: Path, *, connections: int, passes: int) -> Walk:
    spec = workdir / "walk.json"
    headers = {"Authorization": f"Bearer {AUDIT_KEY}"}
    spec.write_text(
        json.dumps(
            {
                "base": base,
                "paths": list(paths),
                "headers": headers,
                "connections": connections,
                "passes": passes,
            }
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench.catalog", "--walk", str(spec)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    )
    return Walk(**json.loads(done.stdout.strip().splitlines()[-1]))


def percentile(values: Sequence[float], p: int) -> float:
    """The ``p``th percentile (100: the largest)."""
    if not values:
        return float("nan")
    if p >= 100 or len(values) < 2:
        return max(values)
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


# --- the baseline: the gateway's answers replayed --------------------------------------------------


def _serve_baseline(port: int, bodies_file: Path) -> None:
    bodies = {key: body.encode() for key, body in json.loads(bodies_file.read_text()).items()}

    @get("/v1/catalog")
    async def catalog(request: Request[Any, Any, Any]) -> Response[bytes]:
        body = bodies[request.scope["query_string"].decode()]
        return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    run_event_loop(
        serve([Listener(Litestar(route_handlers=[catalog], logging_config=None), "127.0.0.1", port)])
    )


# --- process memory ---------------------------------------------------------------------------------


def status_kb(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field_name} in /proc/{pid}/status")


def reset_peak(pid: int) -> bool:
    """Set VmHWM back to the current RSS (Linux ≥ 4.0); whether it was allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@contextmanager
def rss_sampler(pid: int, every_s: float = 0.01) -> Iterator[list[int]]:
    """VmRSS in kB, sampled in a thread while the block runs."""
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(status_kb(pid, "VmRSS"))
            stop.wait(every_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


# --- the parts ---------------------------------------------------------------------------------------


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)  # the figures against their limits


@dataclass(frozen=True)
class Url:
    """One page request of the benchmark: which filter, which page of it, its query string."""

    label: str
    page: int
    query: str

    @property
    def path(self) -> str:
        return "/v1/catalog" + (f"?{self.query}" if self.query else "")


def filter_query(raw: Mapping[str, str], sample_appid: str) -> dict[str, str]:
    return {name: value.replace("{appid}", sample_appid[5:11]) for name, value in raw.items()}


def build_urls(
    gateway_url: str, sample_appid: str, depth: int
) -> tuple[list[Url], dict[str, str], dict[str, int]]:
    """Every filter's URLs down to ``depth`` pages (following the cursors); the gateway's answer to each
    (by query string), and how many rows each filter matches."""
    headers = {"Authorization": f"Bearer {AUDIT_KEY}"}
    urls: list[Url] = []
    bodies: dict[str, str] = {}
    totals: dict[str, int] = {}
    with httpx.Client(base_url=gateway_url, headers=headers, timeout=60) as client:
        for label, raw in FILTERS:
            params = filter_query(raw, sample_appid)
            cursor = None
            for page in range(1, depth + 1):
                url = Url(label, page, urlencode({**params, **({"cursor": cursor} if cursor else {})}))
                answer = client.get(url.path)
                if answer.status_code != 200:
                    raise RuntimeError(f"GET {url.path}: {answer.status_code} {answer.text[:300]}")
                urls.append(url)
                bodies[url.query] = answer.text
                totals[label] = answer.json()["total"]
                cursor = answer.json()["next_cursor"]
                if cursor is None:
                    break
    return urls, bodies, totals


def run_pages(
    deployment: Deployment, gateway_url: str, seeded: Seeded, args: argparse.Namespace, results: Results
) -> None:
    urls, bodies, totals = build_urls(gateway_url, seeded.sample_appid, args.depth)
    paths = [url.path for url in urls]
    bodies_file = deployment.workdir / "bodies.json"
    bodies_file.write_text(json.dumps(bodies, ensure_ascii=False))
    port = free_port()
    baseline_url = f"http://127.0.0.1:{port}"
    serve_baseline = ["tests.bench.catalog", "--serve-baseline", str(port), "--bodies", str(bodies_file)]
    deployment.start("baseline", serve_baseline)
    wait_for(lambda: httpx.get(baseline_url + paths[0]).status_code == 200, what="the baseline")
    for url in urls:
        if httpx.get(baseline_url + url.path).content != bodies[url.query].encode():
            raise RuntimeError(f"the baseline's answer to {url.path} is not the gateway's")
    sizes = [len(body.encode()) for body in bodies.values()]
    print(
        f"pages: {len(urls)} URLs ({len(FILTERS)} filters, up to {args.depth} pages down each one's cursor, "
        f"100 rows a page, {min(sizes):,}–{max(sizes):,} bytes); {args.connections} connection(s), each URL "
        f"{args.passes}× a round, {args.rounds} rounds after a warm-up",
        flush=True,
    )
    targets = {"gateway": gateway_url, "baseline": baseline_url}

    def one(name: str) -> Walk:
        deployment.check_alive()
        return walk(
            targets[name], paths, deployment.workdir, connections=args.connections, passes=args.passes
        )

    for name in targets:  # warm-up, discarded
        one(name)
    rounds: dict[str, list[Walk]] = {"gateway": [], "baseline": []}
    for i in range(args.rounds):
        order = ("gateway", "baseline") if i % 2 == 0 else ("baseline", "gateway")
        for name in order:
            rounds[name].append(one(name))
        g, b = rounds["gateway"][-1], rounds["baseline"][-1]
        print(
            f"  round {i + 1}: gateway p50 {percentile(g.all_ms, 50):.1f} ms, "
            f"p95 {percentile(g.all_ms, 95):.1f} ms; baseline p50 {percentile(b.all_ms, 50):.2f} ms, "
            f"p95 {percentile(b.all_ms, 95):.2f} ms",
            flush=True,
        )
    for name, walks in rounds.items():
        errors = sum(w.bad_status + w.socket_errors for w in walks)
        if errors:
            print(f"WARNING: {name}: {errors} failed requests; its figures are not valid")

    def median_of(name: str, p: int) -> float:
        return statistics.median(percentile(w.all_ms, p) for w in rounds[name])

    def rps(name: str) -> float:
        return statistics.median(w.requests / w.duration_s for w in rounds[name])

    p95 = median_of("gateway", 95)
    results.rows.append(Row("page latency p95 ms", p95, PAGE_P95_MS, target=1.0, higher_is_better=False))
    print()
    print("pages: the gateway against its own answers replayed by a bare Litestar route")
    print_table(
        [
            Row("latency p50 ms (median of rounds)", median_of("gateway", 50), median_of("baseline", 50)),
            Row("latency p95 ms (median of rounds)", p95, median_of("baseline", 95)),
            Row("latency max ms (median of rounds)", median_of("gateway", 100), median_of("baseline", 100)),
            Row(f"requests/s, {args.connections} connection(s)", rps("gateway"), rps("baseline")),
        ],
        ours="gateway",
        baseline="replayed",
    )
    print()
    print("the gateway's pages by filter, every round pooled: p50, p95, max ms; rows the filter matches")
    by_filter: dict[str, list[float]] = {label: [] for label, _ in FILTERS}
    for w in rounds["gateway"]:
        for url, per_url in zip(urls, w.latencies_ms, strict=True):
            by_filter[url.label].extend(per_url)
    width = max(len(label) for label in by_filter)
    for label, raw in FILTERS:
        values = by_filter[label]
        shown = urlencode(filter_query(raw, seeded.sample_appid)) or "-"
        print(
            f"  {label:<{width}}  {percentile(values, 50):7.1f} {percentile(values, 95):7.1f} "
            f"{max(values):7.1f}  {totals[label]:>7,}  {shown}"
        )
    deployment.servers["baseline"].stop()
    if args.profile is not None:
        out = args.profile.with_name(f"{args.profile.stem}-pages{args.profile.suffix}")
        pid = deployment.gateways["gateway"].server.pid
        spy = subprocess.Popen(
            py_spy(out, "--pid", str(pid)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        time.sleep(1)
        try:
            walk(gateway_url, paths, deployment.workdir, connections=args.connections, passes=args.passes)
        finally:
            spy.send_signal(signal.SIGINT)  # py-spy writes what it has
            _, spy_errors = spy.communicate(timeout=120)
        if spy.returncode not in (0, -signal.SIGINT):
            print(f"py-spy failed ({spy.returncode}): {spy_errors.strip()[-500:]}")
        print(f"profile of the gateway over one more round of pages: {out}")


def run_csv(deployment: Deployment, gateway_url: str, seeded: Seeded, results: Results) -> None:
    pid = deployment.gateways["gateway"].server.pid
    headers = {"Authorization": f"Bearer {AUDIT_KEY}"}
    rss_before = status_kb(pid, "VmRSS")
    hwm_reset = reset_peak(pid)
    hwm_before = status_kb(pid, "VmHWM")
    size = lines = 0
    started = time.monotonic()
    with (
        rss_sampler(pid) as samples,
        httpx.Client(timeout=600) as client,
        client.stream("GET", f"{gateway_url}/v1/catalog.csv", headers=headers) as answer,
    ):
        if answer.status_code != 200:
            raise RuntimeError(f"GET /v1/catalog.csv: {answer.status_code} {answer.read()[:300]!r}")
        for chunk in answer.iter_raw():
            size += len(chunk)
            lines += chunk.count(b"\n")
    seconds = time.monotonic() - started
    hwm_after = status_kb(pid, "VmHWM")
    peak_kb = max([hwm_after if hwm_reset else 0, *samples])
    added_mb = (peak_kb - rss_before) / 1024
    results.rows.append(
        Row("CSV export: memory added MB", added_mb, CSV_ADDED_MB, target=1.0, higher_is_better=False)
    )
    how = (
        "VmHWM reset before the export"
        if hwm_reset
        else f"VmRSS sampled ({len(samples)} samples; HWM not resettable)"
    )
    print()
    print(
        f"CSV export: {lines - 1:,} rows (expected {seeded.authorizers:,}), {size / 2**20:.1f} MB "
        f"in {seconds:.1f} s "
        f"({(lines - 1) / seconds:,.0f} rows/s); gateway RSS {rss_before / 1024:.1f} MB before, "
        f"peak {peak_kb / 1024:.1f} MB during ({how}; HWM before {hwm_before / 1024:.1f} MB), "
        f"{max(samples, default=0) / 1024:.1f} MB highest sample"
    )


def population(count: int, seed: int = 6) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """Accounts for the simulator on 1–3 of the five components, some with open-account management (on
    one), some with only open/have, some with neither; the members of the group's and another open account."""
    rng = random.Random(seed)
    components = [p[2] for p in PLATFORMS]
    accounts: list[dict[str, Any]] = []
    members: dict[str, list[str]] = {GROUP_OPEN: [], OTHER_OPENS[0]: []}
    for i in range(count):
        kind = "mini_program" if rng.random() < 0.4 else "official_account"
        appid = _appid(i)
        where = rng.sample(components, rng.choices((1, 2, 3), (70, 25, 5))[0])
        sets = {c: list(BASE_SETS[kind]) for c in where}
        path = rng.choices(("manage", "have", "neither"), (60, 25, 15))[0]
        if path == "manage":
            sets[rng.choice(where)].append(MANAGE_SET[kind])
        elif path == "have":
            sets[rng.choice(where)].append(HAVE_SET[kind])
        bound = rng.choices((GROUP_OPEN, OTHER_OPENS[0], None), (55, 5, 40))[0]
        if bound is not None:
            members[bound].append(appid)
        city, trade = rng.choice(CITIES), rng.choice(TRADES)
        accounts.append(
            {
                "authorizer_appid": appid,
                "kind": kind,
                "nick_name": f"{city}{trade} {i}",
                "principal_name": f"ACME {trade} {city} {rng.randrange(400)} Co., Ltd.",
                "verify_type": rng.choice((0, 0, 0, -1)),
                "components": {c: sorted(s) for c, s in sets.items()},
            }
        )
    return accounts, members


async def seed_simulator(simulator_url: str, count: int) -> None:
    accounts, members = population(count)
    gate = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=simulator_url, timeout=60) as sim:

        async def one(account: dict[str, Any]) -> None:
            async with gate:
                (await sim.post("/sim/authorizers", json=account)).raise_for_status()

        await asyncio.gather(*(one(a) for a in accounts))
        for open_appid, bound in members.items():
            body = {"open_appid": open_appid, "principal_name": "ACME", "verified": True, "members": bound}
            (await sim.post("/sim/open-accounts", json=body)).raise_for_status()


def run_sync(
    deployment: Deployment, databases: Databases, args: argparse.Namespace, results: Results
) -> None:
    database_url = databases.new("sync")
    gateway = deployment.start_gateway("sync-gateway", {"GATEWAY_DATABASE_URL": database_url})
    port = free_port()
    simulator_url = f"http://127.0.0.1:{port}"
    deployment.registry.write_text(registry_text(simulator_url))
    simulate = ["gateway", "simulate", "--config", str(deployment.registry), "--gateway-url", gateway.url]
    simulator = deployment.start("simulator", [*simulate, "--port", str(port), "--ticket-interval", "0"])
    wait_for(lambda: httpx.get(f"{simulator_url}/sim/state").status_code == 200, what="the simulator")
    for _, _, component_appid in PLATFORMS:
        pushed = httpx.post(
            f"{simulator_url}/sim/components/{component_appid}/push-ticket", timeout=30
        ).json()
        if pushed.get("body") != "success":
            raise RuntimeError(f"the gateway refused the ticket push of {component_appid}: {pushed}")
    started = time.monotonic()
    asyncio.run(seed_simulator(simulator_url, args.sync_authorizers))
    print()
    print(
        f"sync: {args.sync_authorizers:,} accounts seeded in the simulator "
        f"in {time.monotonic() - started:.1f} s",
        flush=True,
    )
    deployment.servers["sync-gateway"].stop()  # it only had to receive the tickets
    latency_s = args.latency_ms / 1000
    httpx.post(f"{simulator_url}/sim/faults", json={"endpoint": "*", "delay_s": latency_s}).raise_for_status()
    httpx.post(f"{simulator_url}/sim/counters/reset").raise_for_status()

    command = [sys.executable, "-m", "gateway", "catalog", "sync", "--config", str(deployment.registry)]
    command += ["--concurrency", str(args.concurrency)]
    env = {**deployment.env, "GATEWAY_DATABASE_URL": database_url}
    if args.profile is not None:  # nonblocking: the sync is measured while py-spy samples it
        out = args.profile.with_name(f"{args.profile.stem}-sync{args.profile.suffix}")
        command = py_spy(out, "--nonblocking", "--", *command)
        print(f"  (measured under py-spy --nonblocking, writing {out})")
    simulator_cpu = cpu_seconds(simulator.pid)
    children_cpu = _children_cpu()
    started = time.monotonic()
    done = subprocess.run(
        command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=3600, check=False
    )
    elapsed = time.monotonic() - started
    children_cpu = _children_cpu() - children_cpu
    simulator_cpu = cpu_seconds(simulator.pid) - simulator_cpu
    counters = httpx.get(f"{simulator_url}/sim/counters").json()
    calls = sum(c["total"] for c in counters.values())
    if done.returncode not in (0, 1) or not calls:  # 1: it finished, with failures in its summary
        raise RuntimeError(f"the sync exited with {done.returncode}:\n{done.stdout}\n{done.stderr[-3000:]}")
    if done.returncode != 0:
        print(f"WARNING: the sync had failures; its figure is not valid:\n{done.stdout}")
    bound = calls * latency_s / args.concurrency
    summary = _summary(done.stdout)
    results.rows.append(
        Row(
            f"sync of {args.sync_authorizers:,} authorizers: seconds",
            elapsed,
            bound,
            target=SYNC_RATIO,
            higher_is_better=False,
        )
    )
    info = counters.get("api_get_authorizer_info", {}).get("total", 0)
    print(
        f"sync: `gateway catalog sync --concurrency {args.concurrency}`, every WeChat call answered after "
        f"{args.latency_ms:g} ms; {summary.get('authorizations', '?')} authorizations of "
        f"{summary.get('authorizers', '?')} authorizers, {summary.get('failures', '?')} failures, "
        f"sync's own duration {summary.get('duration', '?')}, command {elapsed:.1f} s"
    )
    print(f"  {calls:,} WeChat calls: " + ", ".join(f"{name} {c['total']:,}" for name, c in counters.items()))
    print(
        f"  bound {calls:,} × {latency_s:g} s / {args.concurrency} = {bound:.1f} s; "
        f"{calls / elapsed:,.0f} calls/s against {args.concurrency / latency_s:,.0f} at the bound; "
        f"info calls {info:,} for {summary.get('authorizations', '?')} authorizations"
    )
    print(f"  CPU: the sync process {children_cpu:.1f} s, the simulator {simulator_cpu:.1f} s")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _summary(stdout: str) -> dict[str, str]:
    """The sync's summary table: label -> value (counts with thousands separators)."""
    rows = {}
    for line in stdout.splitlines():
        if line.startswith("problems:"):
            break
        label, _, value = line.rpartition(" ")
        if label.strip():
            rows[label.strip()] = f"{int(value):,}" if value.isdigit() else value
    return rows


def py_spy(out: Path, *target: str) -> list[str]:
    """The py-spy ``record`` command writing ``out`` (its format by its suffix) of ``target``."""
    binary = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    formats = {".svg": "flamegraph", ".json": "speedscope", ".txt": "raw"}
    return [
        binary,
        "record",
        "--rate",
        "100",
        "--format",
        formats.get(out.suffix, "flamegraph"),
        "--output",
        str(out),
        *target,
    ]


# --- the run ---------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> list[Row]:
    results = Results()
    with tempfile.TemporaryDirectory(prefix="bench-catalog-") as tmp:
        workdir = Path(tmp)
        registry = workdir / "registry.yaml"
        registry.write_text(registry_text(f"http://127.0.0.1:{free_port()}"))  # no WeChat for the pages
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES)}
        env.update(demo_environment(registry, {}))
        env["GATEWAY_CATALOG_SYNC_INTERVAL_S"] = "0"
        databases = Databases(workdir, args.database_url)
        deployment = Deployment(workdir, env, registry, "")
        print(f"machine: {machine()}")
        try:
            if "pages" not in args.skip or "csv" not in args.skip:
                url = databases.new("catalog")
                print(
                    f"database: {urlsplit(url).scheme}; seeding {args.authorizers:,} accounts "
                    f"on {len(PLATFORMS)} platforms",
                    flush=True,
                )
                seeded = seed_catalog(url, args.authorizers)
                print(
                    f"seeded {seeded.authorizers:,} accounts, {seeded.authorizations:,} authorizations, "
                    f"{seeded.credentials:,} token rows in {seeded.seconds:.1f} s",
                    flush=True,
                )
                gateway = deployment.start_gateway("gateway", {"GATEWAY_DATABASE_URL": url})
                if "pages" not in args.skip:
                    run_pages(deployment, gateway.url, seeded, args, results)
                if "csv" not in args.skip:
                    run_csv(deployment, gateway.url, seeded, results)
                deployment.servers["gateway"].stop()
            if "sync" not in args.skip:
                run_sync(deployment, databases, args, results)
        except BaseException:
            deployment.stop()
            for server in deployment.servers.values():  # before the temporary directory goes
                lines = server.log.read_text(errors="replace").splitlines()[-25:]
                tail = "\n".join(line if len(line) < 500 else line[:500] + " …" for line in lines)
                print(f"--- the last lines of {server.name}'s log:\n{tail}", file=sys.stderr)
            raise
        finally:
            deployment.stop()
            databases.drop()
        print(f"machine after: {machine()}")
        print()
        print("the issue's figures against their limits")
        print_table(results.rows, ours="measured", baseline="limit")
    return results.rows


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.catalog",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--authorizers", type=int, default=100_000, help="accounts in the catalog (default 100,000)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds of page requests (default 3)")
    parser.add_argument("--passes", type=int, default=1, help="requests of each URL per round (default 1)")
    parser.add_argument(
        "--depth", type=int, default=3, help="pages followed down each filter's cursor (default 3)"
    )
    parser.add_argument("--connections", type=int, default=1, help="concurrent page requests (default 1)")
    parser.add_argument(
        "--sync-authorizers",
        type=int,
        default=10_000,
        help="accounts in the simulator to sync (default 10,000)",
    )
    parser.add_argument("--concurrency", type=int, default=16, help="the sync's --concurrency (default 16)")
    parser.add_argument(
        "--latency-ms", type=float, default=50.0, help="the simulator's answer delay (default 50)"
    )
    parser.add_argument(
        "--database-url",
        metavar="SERVER",
        help="a PostgreSQL server, e.g. postgresql+asyncpg://postgres@127.0.0.1:5432: fresh databases are "
        "created on it and dropped after (default: SQLite files in a temporary directory)",
    )
    parser.add_argument("--skip", default="", help="parts to leave out, comma-separated: pages, csv, sync")
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy the gateway over one more page round and the sync: FILE-pages.svg, FILE-sync.svg",
    )
    parser.add_argument("--walk", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--bodies", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.walk is not None:
        _load_main(args.walk)
        return
    if args.serve_baseline is not None:
        _serve_baseline(args.serve_baseline, args.bodies)
        return
    args.skip = {part.strip() for part in args.skip.split(",") if part.strip()}
    if args.skip - {"pages", "csv", "sync"}:
        parser.error("--skip: pages, csv, sync")
    if (
        not 100 <= args.authorizers <= 1_000_000
        or not 10 <= args.sync_authorizers <= 100_000
        or not 1 <= args.rounds <= 20
        or not 1 <= args.passes <= 100
        or not 1 <= args.depth <= 20
        or not 1 <= args.connections <= 64
        or not 1 <= args.concurrency <= 256
        or not 0 < args.latency_ms <= 1000
    ):
        parser.error(
            "--authorizers 100..1,000,000, --sync-authorizers 10..100,000, --rounds 1..20, --passes 1..100, "
            "--depth 1..20, --connections 1..64, --concurrency 1..256, --latency-ms (0, 1000]"
        )
    if args.database_url is not None and not args.database_url.startswith("postgresql"):
        parser.error("--database-url: a PostgreSQL server (postgresql+asyncpg://user@host:port)")
    run(args)


if __name__ == "__main__":
    main()

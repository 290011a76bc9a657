"""Benchmark: the gateway's memory (issue 7): idle RSS, and RSS with 100,000 authorizers loaded. Reported.

    python -m tests.bench.memory [--authorizers 100000] [--depth 3]
    python -m tests.bench.memory --table-sizes postgresql+asyncpg://postgres@127.0.0.1:5432

Each state is one ``gateway serve`` on a SQLite file in a temporary directory, with the catalog
benchmark's registry (the example's three components and two more, generated secrets; the scheduled
sync off) and WeChat played by ``gateway simulate``, which pushes retail's ticket and has
``wxa0000000000001`` authorized on it:

  empty   a fresh database: the schema and that one authorization.
  loaded  ``--authorizers`` accounts (100,000; ~135,000 authorizations, ~83,000 token rows) written
          first by ``tests.bench.catalog.seed_catalog``, then the same authorization.

In both, once the gateway is ready: a few warm requests (``/readyz``, ``/healthz``, 20 token requests,
a gateway token and 5 ``/wx`` calls, the first catalog page), 2 s of rest, then VmRSS: the idle RSS.
Then the exercise: the catalog benchmark's ten filters followed ``--depth`` pages down their cursors,
the whole CSV export streamed, 500 token requests and 100 ``/wx`` calls; 2 s of rest, then VmRSS again,
and VmHWM, the peak RSS over the process's life.

Baseline: a bare Litestar app (``tests.bench._bare``) served by the same ``gateway.http.serving.serve``,
after 20 warm requests. There is no target: the figures are reported.

``--table-sizes SERVER`` measures storage instead: a fresh PostgreSQL database on SERVER, seeded by
``seed_catalog`` plus as many audit rows (``token.issued``) as accounts, then every table's
``pg_total_relation_size`` (indexes and TOAST included) and bytes per row; the database is dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx

from gateway.cli.demo import demo_environment
from tests.bench._harness import (
    AUTHORIZER,
    CLIENT_KEY,
    COMPONENT_APPID,
    TOKEN_PATH,
    Deployment,
    Row,
    free_port,
    machine,
    print_table,
    wait_for,
)
from tests.bench.catalog import AUDIT_KEY, ENV_PREFIXES, build_urls, registry_text, seed_catalog, status_kb
from tests.bench.storm import POSTGRES, fresh_database
from tests.support.flows import approve_authorization, push_ticket

BEARER = {"Authorization": f"Bearer {CLIENT_KEY}"}
SETTLE_S = 2.0  # rest before reading RSS: the audit flush and any request's leftovers are done


def _mb(kb: int) -> float:
    return kb / 1024


@dataclass(frozen=True)
class Memory:
    """What one process's memory looked like: after start-up, when idle after warm requests, after
    the exercise, and at its peak (kB)."""

    started_kb: int
    idle_kb: int
    exercised_kb: int
    peak_kb: int


# --- the baseline -----------------------------------------------------------------------------------------


def measure_baseline(deployment: Deployment) -> Memory:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = deployment.start("bare", ["tests.bench._bare", "--port", str(port)])
    wait_for(lambda: httpx.get(f"{url}/healthz").status_code == 200, what="the bare app")
    started = status_kb(server.pid, "VmRSS")
    with httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(20):
            client.get(TOKEN_PATH).raise_for_status()
    time.sleep(SETTLE_S)
    idle = status_kb(server.pid, "VmRSS")
    return Memory(started, idle, idle, status_kb(server.pid, "VmHWM"))


# --- the gateway ------------------------------------------------------------------------------------------


async def _authorize(simulator_url: str, gateway_url: str, component_secret: str) -> None:
    """Retail's ticket, then ``AUTHORIZER``'s approval; returns once the gateway vends its token."""
    async with (
        httpx.AsyncClient(base_url=simulator_url, timeout=30) as sim,
        httpx.AsyncClient(base_url=gateway_url, timeout=30, headers=BEARER) as gateway,
    ):
        pushed = await push_ticket(sim, COMPONENT_APPID)
        if pushed.get("body") != "success":
            raise RuntimeError(f"the gateway refused the ticket push: {pushed}")
        await approve_authorization(sim, COMPONENT_APPID, component_secret, AUTHORIZER, [1, 2, 24])
        for _ in range(400):
            if (await gateway.get(TOKEN_PATH)).status_code == 200:
                return
            await asyncio.sleep(0.05)
    raise RuntimeError("the gateway never vended the authorizer's token")


def _wx_calls(client: httpx.Client, gateway_token: str, count: int) -> None:
    for _ in range(count):
        answer = client.get("/wx/cgi-bin/user/get", params={"access_token": gateway_token})
        if answer.status_code != 200 or answer.json().get("errcode", 0) != 0:
            raise RuntimeError(f"/wx/cgi-bin/user/get: {answer.status_code} {answer.text[:200]}")


def _token_calls(client: httpx.Client, count: int) -> None:
    for _ in range(count):
        client.get(TOKEN_PATH, headers=BEARER).raise_for_status()


def measure_gateway(
    workdir: Path, env: dict[str, str], name: str, database_url: str, sample_appid: str, depth: int
) -> tuple[Memory, int]:
    """One gateway on ``database_url`` and its own simulator: its memory, and the CSV rows exported."""
    simulator_port = free_port()
    simulator_url = f"http://127.0.0.1:{simulator_port}"
    registry = workdir / f"registry-{name}.yaml"
    registry.write_text(registry_text(simulator_url))
    deployment = Deployment(workdir, {**env, "GATEWAY_DATABASE_URL": database_url}, registry, simulator_url)
    try:
        return _exercise(deployment, name, sample_appid, depth)
    finally:
        deployment.stop()


def _exercise(deployment: Deployment, name: str, sample_appid: str, depth: int) -> tuple[Memory, int]:
    simulator_url = deployment.simulator_url
    simulator_port = simulator_url.rsplit(":", 1)[1]
    registry = deployment.registry
    gateway = deployment.start_gateway(f"gateway-{name}")
    pid = gateway.server.pid
    started = status_kb(pid, "VmRSS")
    simulate = ["gateway", "simulate", "--config", str(registry), "--gateway-url", gateway.url]
    deployment.start(f"simulator-{name}", [*simulate, "--port", simulator_port, "--ticket-interval", "0"])
    wait_for(lambda: httpx.get(f"{simulator_url}/sim/state").status_code == 200, what="the simulator")
    asyncio.run(_authorize(simulator_url, gateway.url, deployment.env["RETAIL_APPSECRET"]))
    query = urlencode({"grant_type": "client_credential", "appid": AUTHORIZER, "secret": CLIENT_KEY})
    with httpx.Client(base_url=gateway.url, timeout=600) as client:
        # A few warm requests, then the idle figure.
        client.get("/readyz").raise_for_status()
        client.get("/healthz").raise_for_status()
        _token_calls(client, 20)
        gateway_token = client.get(f"/wx/cgi-bin/token?{query}").json()["access_token"]
        _wx_calls(client, gateway_token, 5)
        client.get("/v1/catalog", headers={"Authorization": f"Bearer {AUDIT_KEY}"}).raise_for_status()
        time.sleep(SETTLE_S)
        idle = status_kb(pid, "VmRSS")
        # The exercise: the catalog's pages and whole export, then the token paths.
        build_urls(gateway.url, sample_appid, depth)
        rows = 0
        with client.stream("GET", "/v1/catalog.csv", headers={"Authorization": f"Bearer {AUDIT_KEY}"}) as csv:
            csv.raise_for_status()
            for chunk in csv.iter_raw():
                rows += chunk.count(b"\n")
        _token_calls(client, 500)
        _wx_calls(client, gateway_token, 100)
    time.sleep(SETTLE_S)
    return Memory(started, idle, status_kb(pid, "VmRSS"), status_kb(pid, "VmHWM")), rows - 1


def _database_mb(url: str) -> float:
    path = Path(url.removeprefix("sqlite+aiosqlite:///"))
    return sum(p.stat().st_size for p in path.parent.glob(f"{path.name}*")) / 2**20


def measure(*, authorizers: int, depth: int, verbose: bool = True) -> list[Row]:
    def say(text: str) -> None:
        if verbose:
            print(text, flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        workdir = Path(tmp)
        # Generated secrets for every ${VAR} of the registry (the same names whatever its api_base).
        secrets_of = workdir / "registry.yaml"
        secrets_of.write_text(registry_text("http://127.0.0.1:8001"))
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES)}
        env.update(demo_environment(secrets_of, {}))
        env["GATEWAY_CATALOG_SYNC_INTERVAL_S"] = "0"
        baseline = Deployment(workdir, env, secrets_of, "")
        try:
            bare = measure_baseline(baseline)
        finally:
            baseline.stop()
        say(f"bare app: RSS {_mb(bare.idle_kb):.1f} MB after 20 requests, peak {_mb(bare.peak_kb):.1f} MB")
        empty_url = f"sqlite+aiosqlite:///{workdir / 'empty.db'}"
        empty, _ = measure_gateway(workdir, env, "empty", empty_url, "wx0000000000000000", depth)
        say(_memory_line("empty database", empty))
        loaded_url = f"sqlite+aiosqlite:///{workdir / 'loaded.db'}"
        seeded = seed_catalog(loaded_url, authorizers)
        say(
            f"seeded {seeded.authorizers:,} accounts, {seeded.authorizations:,} authorizations, "
            f"{seeded.credentials:,} token rows in {seeded.seconds:.1f} s; SQLite file "
            f"{_database_mb(loaded_url):.1f} MB"
        )
        loaded, exported = measure_gateway(workdir, env, "loaded", loaded_url, seeded.sample_appid, depth)
        say(
            _memory_line(f"{authorizers:,} authorizers", loaded)
            + f"; CSV rows {exported:,} (the seeded accounts and {AUTHORIZER})"
        )
    thousands = f"{authorizers // 1000:,}k"
    return [
        Row("idle RSS MB, empty database", _mb(empty.idle_kb), _mb(bare.idle_kb)),
        Row(f"idle RSS MB, {thousands} authorizers", _mb(loaded.idle_kb), _mb(bare.idle_kb)),
        Row(f"RSS MB after catalog, CSV, tokens, {thousands}", _mb(loaded.exercised_kb), _mb(bare.idle_kb)),
        Row(f"peak RSS MB (VmHWM), {thousands} authorizers", _mb(loaded.peak_kb), _mb(bare.peak_kb)),
    ]


def _memory_line(what: str, memory: Memory) -> str:
    return (
        f"gateway, {what}: RSS {_mb(memory.started_kb):.1f} MB at start-up, {_mb(memory.idle_kb):.1f} MB "
        f"idle after warm requests, {_mb(memory.exercised_kb):.1f} MB after the exercise, peak "
        f"{_mb(memory.peak_kb):.1f} MB"
    )


# --- storage on PostgreSQL ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TableSize:
    table: str
    rows: int
    total_bytes: int  # pg_total_relation_size: heap, indexes, TOAST
    heap_bytes: int


def table_sizes(server: str, authorizers: int) -> list[TableSize]:
    """Seed a fresh database on ``server`` like the catalog benchmark, add one ``token.issued`` audit row
    per account, and measure every table."""
    with fresh_database(server, "bench_sizes") as url:
        seeded = seed_catalog(url, authorizers)
        print(
            f"seeded {seeded.authorizers:,} accounts, {seeded.authorizations:,} authorizations, "
            f"{seeded.credentials:,} token rows in {seeded.seconds:.1f} s",
            flush=True,
        )
        return asyncio.run(_audit_and_measure(url, authorizers))


async def _audit_and_measure(url: str, count: int) -> list[TableSize]:
    from sqlalchemy import insert, text

    from gateway.store import create_engine
    from gateway.store.tables import AuditEntry

    rng = random.Random(7)
    now = time.time()
    platforms = ("retail", "finance", "services", "logistics", "media")
    rows = [
        {
            "at": now - rng.uniform(0, 86400),
            "actor": rng.choice(("crm", "payments", "ops")),
            "action": "token.issued",
            "platform_id": rng.choice(platforms),
            "authorizer_appid": f"wx{rng.getrandbits(64):016x}",
            "detail": None,
        }
        for _ in range(count)
    ]
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            for start in range(0, len(rows), 5000):
                await conn.execute(insert(AuditEntry.__table__), rows[start : start + 5000])  # type: ignore[attr-defined]
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("VACUUM ANALYZE"))
            tables = (
                await conn.execute(
                    text(
                        "SELECT c.relname, pg_total_relation_size(c.oid), pg_relation_size(c.oid) "
                        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE c.relkind = 'r' AND n.nspname = 'public' ORDER BY 2 DESC"
                    )
                )
            ).all()
            sizes = []
            for name, total, heap in tables:
                counted = (await conn.execute(text(f'SELECT count(*) FROM "{name}"'))).scalar_one()  # noqa: S608
                sizes.append(TableSize(name, counted, total, heap))
            return sizes
    finally:
        await engine.dispose()


def print_sizes(sizes: list[TableSize], authorizers: int) -> None:
    width = max(len(s.table) for s in sizes)
    print(f"{'table':<{width}}  {'rows':>9}  {'total MB':>9}  {'heap MB':>8}  {'B/row':>6}  {'B/account':>9}")
    for s in sizes:
        per_row = s.total_bytes / s.rows if s.rows else 0
        print(
            f"{s.table:<{width}}  {s.rows:>9,}  {s.total_bytes / 2**20:>9.1f}  {s.heap_bytes / 2**20:>8.1f}  "
            f"{per_row:>6.0f}  {s.total_bytes / authorizers:>9.0f}"
        )
    total = sum(s.total_bytes for s in sizes)
    audit = sum(s.total_bytes for s in sizes if s.table == "audit_log")
    print(
        f"all tables: {total / 2**20:.1f} MB; without audit_log {(total - audit) / 2**20:.1f} MB, "
        f"{(total - audit) / authorizers:,.0f} bytes per account"
    )


# --- the run ------------------------------------------------------------------------------------------------


def suite(quick: bool) -> list[Row]:
    """The issue's figures; ``quick``: 10,000 authorizers and one page per filter instead of 100,000 and 3."""
    return measure(authorizers=10_000 if quick else 100_000, depth=1 if quick else 3)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.memory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--authorizers", type=int, default=100_000, help="accounts loaded (100,000)")
    parser.add_argument("--depth", type=int, default=3, help="catalog pages followed per filter (3)")
    parser.add_argument("--quick", action="store_true", help="10,000 authorizers, one page per filter")
    parser.add_argument(
        "--table-sizes",
        metavar="SERVER",
        nargs="?",
        const=POSTGRES,
        help=f"measure table sizes on a fresh database on this PostgreSQL server instead ({POSTGRES})",
    )
    args = parser.parse_args()
    if args.quick:
        args.authorizers, args.depth = 10_000, 1
    if not 100 <= args.authorizers <= 1_000_000 or not 1 <= args.depth <= 20:
        parser.error("--authorizers 100..1,000,000, --depth 1..20")
    print(f"machine: {machine()}", flush=True)
    if args.table_sizes is not None:
        print_sizes(table_sizes(args.table_sizes, args.authorizers), args.authorizers)
        return
    rows = measure(authorizers=args.authorizers, depth=args.depth)
    print(f"machine after: {machine()}")
    print()
    print_table(rows, ours="gateway", baseline="bare app")


if __name__ == "__main__":
    main()

"""Exactly once across replicas: three real ``gateway serve`` processes on one PostgreSQL database.

WeChat is played by one ``gateway simulate`` process whose pushes land on the first replica. Every token
is expired (at WeChat and in the shared store), hundreds of concurrent requests hit all replicas, and the
simulator's counters must show each token fetched once. Then one replica is killed (SIGKILL) while it
holds the renewal lease and waits on WeChat: another replica takes over once the lease lapses, and nothing
is lost.

The replicas cache a token read from the store for ``CACHE_S``; the tests let those caches lapse before
they expire tokens in the store, so that every replica sees the expiry at once.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import os
import re
import signal
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest

from tests.conftest import POSTGRES_SERVER
from tests.support.flows import approve_authorization, push_ticket
from tests.test_e2e import EXAMPLE, Process, free_port, wait_for

T = TypeVar("T")

REPLICAS = 3
LEASE_S = 3.0  # GATEWAY_RENEWAL_LEASE_S of every replica
DELAY_S = 4.0  # how long WeChat sits on the renewal the killed replica started (longer than the lease)
CACHE_S = 5.0  # TokenService's default cache_s: how long a replica reuses a token read from the store
STORM = 450  # concurrent requests of the storm
CONNECTIONS = 90  # requests on the wire at once (each replica pools at most 30 database connections)

CRM = {"Authorization": "Bearer demo-crm-key"}  # the example registry's client with scope token for "*"
COMPONENTS = {"retail": "wxc0mp000000001", "finance": "wxc0mp000000002", "services": "wxc0mp000000003"}

# authorizer appid -> (the platform that serves its tokens, {platform: permission sets granted}).
# Each exclusive set (4, 18, 24, ...) goes to one component per account; the example registry pins
# wxb0000000000002 to finance although retail comes first.
AUTHORIZERS: dict[str, tuple[str, dict[str, list[int]]]] = {
    "wxa0000000000001": ("retail", {"retail": [1, 2, 24]}),
    "wxa0000000000002": ("finance", {"finance": [1, 2, 4]}),
    "wxa0000000000003": ("services", {"services": [1, 2, 18]}),
    "wxa0000000000004": ("retail", {"retail": [1, 2, 15], "finance": [1, 2, 24]}),
    "wxb0000000000002": ("finance", {"retail": [1, 2, 4], "finance": [1, 2, 24]}),
}
KILLED_FOR = "wxa0000000000001"  # the authorizer whose renewal dies with its replica


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to the end in a loop of its own (module fixtures are synchronous)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _sql(dsn: str, statement: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(statement, *args)
        return rows
    finally:
        await conn.close()


@dataclass
class Cluster:
    """The simulator, the replicas and the database they share."""

    simulator_url: str
    urls: list[str]
    replicas: list[Process]
    dsn: str  # the shared database, for asyncpg
    secrets: dict[str, str]  # platform id -> component appsecret
    last_token_request: float = 0.0  # monotonic time a replica last answered a token request
    log_marks: list[int] = field(default_factory=list)

    def sim(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.simulator_url, timeout=30)

    async def token(
        self, client: httpx.AsyncClient, replica: int, appid: str, *, patience_s: float = 30
    ) -> httpx.Response:
        """An authorizer token from one replica."""
        url = f"{self.urls[replica]}/v1/authorizers/{appid}/access-token"
        try:
            return await client.get(url, headers=CRM, timeout=patience_s)
        finally:
            self.last_token_request = time.monotonic()

    async def let_caches_lapse(self) -> None:
        """Wait until no replica holds a token it read from the store (none was asked for since)."""
        await asyncio.sleep(max(0.0, self.last_token_request + CACHE_S + 0.5 - time.monotonic()))

    async def counters(self, sim: httpx.AsyncClient, endpoint: str) -> dict[str, int]:
        """Calls of ``endpoint`` since the last reset, by the most specific appid of each call."""
        counters = (await sim.get("/sim/counters")).json()
        by_key: dict[str, int] = counters.get(endpoint, {"by_key": {}})["by_key"]
        return by_key

    async def expire_in_store(self, key: str) -> None:
        """Expire one credential in the store, without making it due for the background renewers."""
        await _sql(self.dsn, "UPDATE credentials SET expires_at = 1, renew_after = NULL WHERE key = $1", key)

    def mark_logs(self) -> None:
        self.log_marks = [len(replica.output()) for replica in self.replicas]

    def logs_since_mark(self) -> list[str]:
        return [replica.output()[mark:] for replica, mark in zip(self.replicas, self.log_marks, strict=True)]

    def tails(self, chars: int = 3000) -> str:
        return "\n".join(
            f"--- replica {i + 1} ---\n{r.output()[-chars:]}" for i, r in enumerate(self.replicas)
        )


def _environment(database_url: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GATEWAY_", "RETAIL_", "FINANCE_", "SERVICES_"))
    }
    for prefix in ("RETAIL", "FINANCE", "SERVICES"):
        env[f"{prefix}_APPSECRET"] = f"{prefix.lower()}-secret"
        env[f"{prefix}_TOKEN"] = f"{prefix.lower()}token"
        env[f"{prefix}_AES_KEY"] = (prefix * 10)[:43]
    env["GATEWAY_SECRET_KEY"] = base64.b64encode(os.urandom(32)).decode()
    env["GATEWAY_DATABASE_URL"] = database_url
    env["GATEWAY_RENEWAL_LEASE_S"] = str(LEASE_S)
    # Outside the demo, serve runs on the example registry's public keys and a loopback URL only when told.
    env["GATEWAY_PUBLIC_URL"] = "http://127.0.0.1:8000"
    env["GATEWAY_ALLOW_UNSAFE"] = "example-keys"
    return env


def _ready(url: str) -> bool:
    return httpx.get(f"{url}/readyz", timeout=5).status_code == 200


async def _authorize_all(cluster: Cluster) -> None:
    async with cluster.sim() as sim:
        for component_appid in COMPONENTS.values():
            report = await push_ticket(sim, component_appid)
            assert report["body"] == "success", report
        for authorizer, (_, grants) in AUTHORIZERS.items():
            for platform, func_ids in grants.items():
                approval = await approve_authorization(
                    sim, COMPONENTS[platform], cluster.secrets[platform], authorizer, func_ids
                )
                push = approval["push"]
                assert push is not None and push["body"] == "success", approval


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp: Path = tmp_path_factory.mktemp("replicas")
    name = f"gateway_replicas_{uuid.uuid4().hex[:12]}"
    server_dsn = POSTGRES_SERVER.replace("postgresql+asyncpg://", "postgresql://")
    _run(_sql(f"{server_dsn}/postgres", f'CREATE DATABASE "{name}"'))
    processes: list[Process] = []
    try:
        env = _environment(f"{POSTGRES_SERVER}/{name}")
        ports = [free_port() for _ in range(REPLICAS)]
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        simulator_url = f"http://127.0.0.1:{free_port()}"
        registry = tmp / "registry.yaml"
        registry.write_text(EXAMPLE.read_text().replace("http://127.0.0.1:8001", simulator_url))
        # All replicas start together: they take turns on the migration (advisory lock).
        for i, port in enumerate(ports):
            serve = ["serve", "--config", str(registry), "--port", str(port)]
            processes.append(Process(serve, env, tmp / f"replica-{i + 1}.log"))
        simulate = [
            "simulate",
            "--config",
            str(registry),
            "--gateway-url",
            urls[0],  # ticket and authorization pushes land on the first replica
            "--port",
            simulator_url.rsplit(":", 1)[1],
            "--ticket-interval",
            "0",
        ]
        simulator = Process(simulate, env, tmp / "simulator.log")
        cluster = Cluster(
            simulator_url,
            urls,
            processes[:REPLICAS],
            f"{server_dsn}/{name}",
            {platform: env[f"{platform.upper()}_APPSECRET"] for platform in COMPONENTS},
        )
        processes.append(simulator)
        for url in urls:
            wait_for(functools.partial(_ready, url), what=f"{url}/readyz")
        wait_for(lambda: httpx.get(f"{simulator_url}/sim/counters", timeout=5).is_success, what="simulator")

        _run(_authorize_all(cluster))

        def serves_token(appid: str, platform: str) -> bool:
            response = httpx.get(f"{urls[0]}/v1/authorizers/{appid}/access-token", headers=CRM, timeout=10)
            return response.status_code == 200 and response.json()["platform"] == platform

        for appid, (platform, _) in AUTHORIZERS.items():
            wait_for(
                functools.partial(serves_token, appid, platform), timeout=20, what=f"a token for {appid}"
            )
        cluster.last_token_request = time.monotonic()
        yield cluster
    finally:
        for process in processes:
            process.stop(signal.SIGKILL)
        _run(_sql(f"{server_dsn}/postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def test_a_storm_on_every_replica_fetches_each_token_once(cluster: Cluster) -> None:
    appids = list(AUTHORIZERS)
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    async with cluster.sim() as sim, httpx.AsyncClient(limits=limits, timeout=60) as client:
        before = {appid: (await cluster.token(client, 0, appid)).json()["access_token"] for appid in appids}
        await cluster.let_caches_lapse()
        # Two hours pass: every token is dead at WeChat and due in the store (the background renewers
        # may join the storm; they take the same leases).
        assert (await sim.post("/sim/expire", json={"what": "all"})).is_success
        await sim.post("/sim/counters/reset")
        cluster.mark_logs()
        await _sql(cluster.dsn, "UPDATE credentials SET expires_at = 1, renew_after = 0")
        # The tokens api_query_auth returned for the authorizations the storm does not ask about (an
        # account's other component) are not part of it: the renewers would renew them too.
        unasked = [
            f"authorizer:{p}:{a}"
            for a, (serving, grants) in AUTHORIZERS.items()
            for p in grants
            if p != serving
        ]
        await _sql(cluster.dsn, "DELETE FROM credentials WHERE key = ANY($1::text[])", unasked)

        # Round robin over replicas (3) and authorizers (5): all 15 pairs, 30 times each.
        responses = await asyncio.gather(
            *(cluster.token(client, i % REPLICAS, appids[i % len(appids)]) for i in range(STORM))
        )

        failures = Counter(f"{r.status_code} {r.text[:200]}" for r in responses if r.status_code != 200)
        assert not failures, f"{failures}\n{cluster.tails()}"
        tokens: defaultdict[str, set[str]] = defaultdict(set)
        for response in responses:
            body = response.json()
            assert body["platform"] == AUTHORIZERS[body["authorizer_appid"]][0]
            tokens[body["authorizer_appid"]].add(body["access_token"])
        assert {appid: len(values) for appid, values in tokens.items()} == dict.fromkeys(appids, 1)
        assert all(before[appid] not in tokens[appid] for appid in appids)

        fetched = await cluster.counters(sim, "api_authorizer_token")
        assert fetched == dict.fromkeys(appids, 1), cluster.tails()
        # every component token expired too; each was fetched once, by whichever replica came first
        assert await cluster.counters(sim, "api_component_token") == dict.fromkeys(COMPONENTS.values(), 1)

        # The tokens work at WeChat (user management, set 2, was granted to every serving component).
        for appid, (value,) in tokens.items():
            users = await sim.get("/cgi-bin/user/get", params={"access_token": value})
            assert users.json().get("errcode", 0) == 0, (appid, users.text)

    # The replicas' own account: one renewal of each authorizer token in all their logs together.
    logs = cluster.logs_since_mark()
    for appid, (platform, _) in AUTHORIZERS.items():
        renewed = re.compile(rf"renewed\b.*\bauthorizer:{platform}:{appid}\b")
        assert sum(len(renewed.findall(log)) for log in logs) == 1, renewed.pattern
    assert not any("Traceback" in log or "lapsed" in log for log in logs), cluster.tails()


async def test_a_replica_killed_during_a_renewal_is_taken_over_within_the_lease(cluster: Cluster) -> None:
    victim, heir, third = 2, 0, 1  # replica 1 stays: it receives the simulator's pushes
    platform = AUTHORIZERS[KILLED_FOR][0]
    key = f"authorizer:{platform}:{KILLED_FOR}"
    async with cluster.sim() as sim, httpx.AsyncClient(timeout=30) as client:
        await cluster.let_caches_lapse()
        # WeChat will sit on the next renewal of this account longer than the lease lasts.
        fault = {"endpoint": "api_authorizer_token", "key": KILLED_FOR, "delay_s": DELAY_S, "times": 1}
        assert (await sim.post("/sim/faults", json=fault)).status_code == 201
        await sim.post("/sim/expire", json={"what": "authorizer", "appid": KILLED_FOR})
        await sim.post("/sim/counters/reset")
        # Expired in the store, and not due for the background renewers: the caller renews it.
        await cluster.expire_in_store(key)

        doomed = asyncio.create_task(cluster.token(client, victim, KILLED_FOR))
        deadline = time.monotonic() + 5
        while (await cluster.counters(sim, "api_authorizer_token")).get(KILLED_FOR, 0) < 1:
            assert time.monotonic() < deadline, f"the renewal never reached WeChat\n{cluster.tails()}"
            await asyncio.sleep(0.05)
        [(owner, lease_until)] = await _sql(
            cluster.dsn, "SELECT lease_owner, lease_until FROM credentials WHERE key = $1", key
        )
        victim_pid = cluster.replicas[victim].proc.pid
        assert owner.split(":")[1] == str(victim_pid) and lease_until > time.time(), (owner, lease_until)
        cluster.replicas[victim].proc.kill()  # SIGKILL, mid-renewal, lease held
        cluster.replicas[victim].proc.wait(10)
        with pytest.raises(httpx.TransportError):
            await doomed

        try:
            response = await cluster.token(client, heir, KILLED_FOR, patience_s=LEASE_S + 10)
        except httpx.TimeoutException:
            pytest.fail(f"no replica took the dead one's renewal over\n{cluster.tails()}")
        answered = time.time()
        assert response.status_code == 200, f"{response.text}\n{cluster.tails()}"
        heir_token = response.json()["access_token"]
        # It waited until the dead replica's lease lapsed (fetching before would be a second renewal in
        # flight), and not much longer.
        assert lease_until <= answered <= lease_until + 2.0, answered - lease_until
        # Two calls reached WeChat: the dead replica's, lost with it, and the heir's.
        assert await cluster.counters(sim, "api_authorizer_token") == {KILLED_FOR: 2}
        users = await sim.get("/cgi-bin/user/get", params={"access_token": heir_token})
        assert users.json().get("errcode", 0) == 0, users.text

        [row] = await _sql(
            cluster.dsn,
            "SELECT lease_owner, lease_until, expires_at, problem FROM credentials WHERE key = $1",
            key,
        )
        assert (row["lease_owner"], row["lease_until"], row["problem"]) == (None, None, None)
        assert row["expires_at"] > time.time() + 7000

        # Nothing is lost: the refresh token still renews (on the third replica), and the survivors
        # serve every authorizer.
        await sim.post("/sim/expire", json={"what": "authorizer", "appid": KILLED_FOR})
        await cluster.expire_in_store(key)
        renewed = await cluster.token(client, third, KILLED_FOR)
        assert renewed.status_code == 200, f"{renewed.text}\n{cluster.tails()}"
        assert renewed.json()["access_token"] != heir_token
        assert await cluster.counters(sim, "api_authorizer_token") == {KILLED_FOR: 3}
        [(status,)] = await _sql(
            cluster.dsn,
            "SELECT status FROM authorizations WHERE platform_id = $1 AND authorizer_appid = $2",
            platform,
            KILLED_FOR,
        )
        assert status == "active"
        survivors = await asyncio.gather(
            *(cluster.token(client, replica, appid) for replica in (heir, third) for appid in AUTHORIZERS)
        )
        assert {r.status_code for r in survivors} == {200}

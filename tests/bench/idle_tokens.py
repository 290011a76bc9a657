"""Benchmark: what a day of idle authorizers costs in ``api_authorizer_token`` calls (issue 19).

    python -m tests.bench.idle_tokens [--authorizers 10000] [--used 100] [--uses-per-hour 3]
                                      [--baseline-authorizers 1000]

WeChat counts every ``api_authorizer_token`` call against a daily quota (wechat-protocol.md §3), so a
token nobody uses should cost nothing a day once it lapses (SPEC §7). One simulated day, in-process: the
gateway and the simulator over ASGI (``tests.support.world.open_world``) on a clock the benchmark moves
(the simulator's is advanced with it, so tokens really expire at WeChat). ``--authorizers`` accounts are
authorized on one component with open-account management (24), so the catalog sync reads each one's
binding with ``open/get``, which takes its authorizer token.

1. Before the day: an initial catalog sync imports every authorization and reads every binding (a token
   minted for each account). The bindings' ``binding_checked_at`` are then spread evenly over the
   preceding ``GATEWAY_BINDING_RECHECK_S`` (7 days), as a gateway in service for a while has them.
2. The day: 24 h in steps of 60 s. Each step the renewer makes one pass (``renew_due``); each of the
   ``--used`` accounts is asked for by a ``/v1`` caller with probability uses-per-hour / 60 (a Poisson
   stream of a few uses an hour); WeChat pushes verify tickets every 10 minutes; the catalog sync runs at
   6, 12, 18 and 24 h (``GATEWAY_CATALOG_SYNC_INTERVAL_S``' default).
3. The simulator's counter of successful ``api_authorizer_token`` calls over the day, and of all of them
   (a call refused because a concurrent renewal had just replaced the component token is retried; it is
   counted in the second figure).

The minimum, what the product needs: **12 per used account**: its token is fresh at the day's start and
must stay valid all day, renewed at least 5 minutes before expiry (SPEC §7): renewals at most every
7200 − 300 = 6900 s, ⌈(86400 − 6900) / 6900⌉ = 12 of them; **plus 1 per idle account whose binding comes
due for its weekly re-read by the day's last sync** (``binding_checked_at`` + 7 days ≤ 24 h; the accounts
in use are read at every sync with the token they hold anyway). That second part is the freshness the
catalog keeps for idle accounts (``gateway.catalog.sync``, step 3), counted from the seeded timestamps.
Target: the gateway's calls ≤ 1.1 × the minimum.

The baseline is today's policy in the same run: every token kept warm (``GATEWAY_TOKEN_WARM_WINDOW_S=inf``)
and every binding read at every sync (``GATEWAY_BINDING_RECHECK_S=0``), over the same day with
``--baseline-authorizers`` accounts (default 1,000: under that policy every account costs the same, about
12 a day, so the figure is scaled to ``--authorizers``; a day of 10,000 warm accounts in-process would take
the renewer's 120,000 renewals and a quarter of an hour). Nothing is asserted; figures that miss a target
say FAIL.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import math
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec
from sqlalchemy import bindparam, text

from gateway.crypto import SecretBox
from gateway.registry.model import parse_registry
from gateway.settings import Settings
from tests.bench._harness import Row, machine, print_table
from tests.conftest import CLIENT_KEYS, PLATFORM_SECRETS, REGISTRY_YAML, registry_environ
from tests.support.flows import push_ticket
from tests.support.world import World, open_world

TARGET = 1.1
DAY_S = 86400.0
STEP_S = 60.0
LIFETIME_S = 7200.0  # the simulator's authorizer tokens, as WeChat's
MIN_MARGIN_S = 300.0  # SPEC §7: renewed at least 5 minutes before expiry
SYNC_EVERY_S = 6 * 3600.0
TICKET_EVERY_S = 600.0
RECHECK_S = 7 * 86400.0  # GATEWAY_BINDING_RECHECK_S' default
RETAIL = PLATFORM_SECRETS["retail"]
BEARER = {"Authorization": f"Bearer {CLIENT_KEYS['crm']}"}


class Clock:
    """The gateway's time: real time plus how far the benchmark moved it."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass(frozen=True)
class Day:
    """What one simulated day cost."""

    authorizers: int
    used: int
    fetched: int  # successful api_authorizer_token calls
    attempted: int  # all of them
    binding_rechecks_due: int  # idle accounts whose binding came due for its re-read during the day
    requests: int
    failed_requests: int
    seconds: float


def _appid(i: int) -> str:
    return f"wxi{i:013d}"


def _settings(database_url: str, box: SecretBox, *, old_policy: bool) -> Settings:
    env = {
        "GATEWAY_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
        "GATEWAY_DATABASE_URL": database_url,
    }
    if old_policy:
        env |= {"GATEWAY_TOKEN_WARM_WINDOW_S": "inf", "GATEWAY_BINDING_RECHECK_S": "0"}
    return msgspec.structs.replace(Settings.from_environ(env), secret_keys=box)


async def _seed(world: World, count: int) -> None:
    gate = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        account = {
            "authorizer_appid": _appid(i),
            "kind": "official_account",
            "nick_name": f"Account {i}",
            "principal_name": "ACME Co., Ltd.",
            "components": {RETAIL["appid"]: [1, 2, 24]},
        }
        async with gate:
            (await world.sim.post("/sim/authorizers", json=account)).raise_for_status()

    await asyncio.gather(*(one(i) for i in range(count)))


async def _advance(world: World, clock: Clock, seconds: float) -> None:
    clock.offset += seconds
    (await world.sim.post("/sim/clock/advance", json={"seconds": seconds})).raise_for_status()


async def _tickets(world: World) -> None:
    for values in PLATFORM_SECRETS.values():
        report = await push_ticket(world.sim, values["appid"])
        if report["body"] != "success":
            raise RuntimeError(f"a verify ticket was refused: {report}")


async def _counter(world: World) -> tuple[int, int]:
    counter = (await world.counters()).get("api_authorizer_token", {})
    return int(counter.get("ok", 0)), int(counter.get("total", 0))


async def simulate_day(
    database_url: str, count: int, used: int, uses_per_hour: float, *, old_policy: bool, seed: int = 19
) -> Day:
    """One day of ``count`` accounts, the first ``used`` of them in use (see the module's docstring)."""
    rng = random.Random(seed)
    box = SecretBox(os.urandom(32))
    registry = parse_registry(REGISTRY_YAML, source="bench-registry.yaml", environ=registry_environ())
    clock = Clock()
    settings = _settings(database_url, box, old_policy=old_policy)
    async with open_world(registry, database_url, box, settings=settings, clock=clock) as world:
        services = world.services
        await _tickets(world)
        await _seed(world, count)
        summary = await services.catalog_sync.run(concurrency=32)
        if summary.authorizers != count or summary.failures:
            raise RuntimeError(f"the initial sync saw {summary.authorizers} of {count} accounts: {summary}")
        start = clock()
        # A gateway in service for a while: each binding read at some time over the past recheck period.
        checked = {_appid(i): start - RECHECK_S * (i + 0.5) / count for i in range(count)}
        update = text(
            "UPDATE authorizer_profiles SET binding_checked_at = :checked WHERE authorizer_appid = :appid"
        ).bindparams(bindparam("checked"), bindparam("appid"))
        async with services.store.engine.begin() as conn:
            await conn.execute(update, [{"checked": t, "appid": a} for a, t in checked.items()])
        last_sync = start + DAY_S
        due = sum(1 for i in range(used, count) if checked[_appid(i)] + RECHECK_S <= last_sync)
        await world.reset_counters()

        began = time.monotonic()
        requests = failed = 0
        steps = round(DAY_S / STEP_S)
        chance = uses_per_hour * STEP_S / 3600
        for step in range(1, steps + 1):
            await _advance(world, clock, STEP_S)
            elapsed = step * STEP_S
            if elapsed % TICKET_EVERY_S == 0:
                await _tickets(world)
            asked = [i for i in range(used) if rng.random() < chance]
            answers = await asyncio.gather(
                *(
                    world.gateway.get(f"/v1/authorizers/{_appid(i)}/access-token", headers=BEARER)
                    for i in asked
                )
            )
            requests += len(answers)
            failed += sum(1 for r in answers if r.status_code != 200)
            await services.tokens.renew_due(concurrency=32)
            if elapsed % SYNC_EVERY_S == 0:
                synced = await services.catalog_sync.run(concurrency=32)
                if synced.failures:
                    raise RuntimeError(f"a catalog sync failed: {synced.problems[:3]}")
        # The renewer may still hold a backlog (100 keys a pass): let it finish what the day made due.
        while await services.tokens.renew_due(concurrency=32):
            pass
        fetched, attempted = await _counter(world)
        return Day(count, used, fetched, attempted, due, requests, failed, time.monotonic() - began)


def minimum(day: Day) -> float:
    """12 per used account (see the module's docstring), 1 per idle account whose binding came due."""
    per_used = math.ceil((DAY_S - (LIFETIME_S - MIN_MARGIN_S)) / (LIFETIME_S - MIN_MARGIN_S))
    return day.used * per_used + day.binding_rechecks_due


def run(authorizers: int, used: int, uses_per_hour: float, baseline_authorizers: int) -> list[Row]:
    print(machine())
    with tempfile.TemporaryDirectory(prefix="idle-tokens-") as tmp:
        workdir = Path(tmp)
        ours = asyncio.run(
            simulate_day(
                f"sqlite+aiosqlite:///{workdir / 'ours.db'}",
                authorizers,
                used,
                uses_per_hour,
                old_policy=False,
            )
        )
        print(f"window policy: {ours}")
        old = asyncio.run(
            simulate_day(
                f"sqlite+aiosqlite:///{workdir / 'old.db'}",
                baseline_authorizers,
                used,
                uses_per_hour,
                old_policy=True,
            )
        )
        print(f"old policy:    {old}")
    # Under the old policy every account costs the same: scaled to ``authorizers`` when fewer were run.
    per_account_old = old.fetched / old.authorizers
    old_scaled = per_account_old * authorizers
    need = minimum(ours)
    print(
        f"minimum: {ours.used} used × 12 + {ours.binding_rechecks_due} idle bindings due = {need:,.0f}; "
        f"the gateway: {ours.fetched:,} ({ours.attempted:,} attempted); "
        f"the old policy: {old.fetched:,} for {old.authorizers:,} accounts "
        f"({per_account_old:.2f} each, {old_scaled:,.0f} for {authorizers:,})"
    )
    rows = [
        Row("api_authorizer_token a day vs the minimum", ours.fetched, need, TARGET, higher_is_better=False),
        Row(
            "api_authorizer_token a day, old policy vs ours", old_scaled, ours.fetched, higher_is_better=False
        ),
        Row("/v1 requests that failed (of all)", ours.failed_requests, ours.requests, higher_is_better=False),
    ]
    print_table(rows, ours="measured", baseline="against")
    return rows


def suite(quick: bool) -> list[Row]:
    """10,000 accounts against the old policy on 1,000 (scaled); ``quick``: 2,000 and 500."""
    return run(2_000, 100, 3.0, 500) if quick else run(10_000, 100, 3.0, 1_000)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.idle_tokens",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--authorizers", type=int, default=10_000, help="accounts (default 10,000)")
    parser.add_argument("--used", type=int, default=100, help="of which in use (default 100)")
    parser.add_argument("--uses-per-hour", type=float, default=3.0, help="per used account (default 3)")
    parser.add_argument(
        "--baseline-authorizers",
        type=int,
        default=1_000,
        help="accounts for the old policy's day (default 1,000)",
    )
    args = parser.parse_args()
    if not 1 <= args.used <= args.authorizers <= 100_000 or not 0 < args.uses_per_hour <= 60:
        parser.error("1 ≤ --used ≤ --authorizers ≤ 100,000 and 0 < --uses-per-hour ≤ 60")
    baseline = args.baseline_authorizers
    if not args.used <= baseline <= 100_000:
        parser.error("--used ≤ --baseline-authorizers ≤ 100,000")
    run(args.authorizers, args.used, args.uses_per_hour, baseline)


if __name__ == "__main__":
    main()

"""Catalog sync: every authorizer of every component brought into the store, compared with the simulator."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import text

from gateway.catalog.sync import JOB_KEY, QUOTA_STRIKES
from gateway.errors import ConfigError
from gateway.settings import Settings
from gateway.wechat.client import WeChatClient
from tests.support.world import FINANCE, OA, RETAIL, World

GROUP_OPEN = "wx0pen0000000001"  # the test registry's group.open_appid
OTHER_OPEN = "wx0ther000000001"
PLATFORM_OF = {RETAIL["appid"]: "retail", FINANCE["appid"]: "finance"}
MANAGE_SET = {"official_account": 24, "mini_program": 25}  # open/get, open/bind …
HAVE_SET = {"official_account": 3, "mini_program": 30}  # open/have
BASE_SETS = {"official_account": [1, 2], "mini_program": [17, 19]}


def population(count: int, seed: int = 6) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """``count`` accounts to seed (official accounts and mini programs on one or both components; open-account
    management, only the open/have set, or neither) and the members of two open accounts."""
    rng = random.Random(seed)
    accounts: list[dict[str, Any]] = []
    members: dict[str, list[str]] = {GROUP_OPEN: [], OTHER_OPEN: []}
    for i in range(count):
        kind = "mini_program" if i % 3 == 0 else "official_account"
        appid = f"wx{'m' if kind == 'mini_program' else 'o'}{i:013d}"
        where = rng.choice([[RETAIL], [FINANCE], [RETAIL, FINANCE]])
        components = {c["appid"]: list(BASE_SETS[kind]) for c in where}
        path = rng.choice(["manage", "manage", "have", "neither"])
        if path == "manage":  # exclusive: one component only
            components[rng.choice(where)["appid"]].append(MANAGE_SET[kind])
        if path != "neither" and rng.random() < 0.7:
            components[rng.choice(where)["appid"]].append(HAVE_SET[kind])
        if path == "have":
            components[where[0]["appid"]].append(HAVE_SET[kind])
        bound = rng.choice([GROUP_OPEN, GROUP_OPEN, OTHER_OPEN, None, None])
        if bound is not None:
            members[bound].append(appid)
        accounts.append(
            {
                "authorizer_appid": appid,
                "kind": kind,
                "nick_name": f"账号 {i}" if i % 2 else f"Account {i}",
                "principal_name": f"ACME {i % 7} Co., Ltd.",
                "verify_type": -1 if i % 5 == 0 else 0,
                "components": {c: sorted(set(sets)) for c, sets in components.items()},
            }
        )
    return accounts, members


async def seed(world: World, count: int, seed: int = 6) -> list[dict[str, Any]]:
    """Seed ``count`` accounts and the open accounts in the simulator (no pushes: the gateway knows none)."""
    accounts, members = population(count, seed)

    async def one(account: dict[str, Any]) -> None:
        (await world.sim.post("/sim/authorizers", json=account)).raise_for_status()

    for start in range(0, len(accounts), 200):
        await asyncio.gather(*(one(a) for a in accounts[start : start + 200]))
    for open_appid, bound in members.items():
        body = {"open_appid": open_appid, "principal_name": "ACME", "verified": True, "members": bound}
        (await world.sim.post("/sim/open-accounts", json=body)).raise_for_status()
    return accounts


async def sim_state(world: World) -> dict[str, Any]:
    state: dict[str, Any] = (await world.sim.get("/sim/state")).json()
    return state


def live_pairs(state: dict[str, Any]) -> dict[tuple[str, str], list[int]]:
    """(platform, authorizer) → func ids of every live authorization in the simulator."""
    return {
        (PLATFORM_OF[a["component_appid"]], a["authorizer_appid"]): a["func_ids"]
        for a in state["authorizations"]
        if a["status"] == "authorized"
    }


def expected_binding(state: dict[str, Any]) -> tuple[dict[str, tuple[str, str | None]], int]:
    """What the catalog must say of each account with a live authorization: (binding, open_appid); and
    how many are bound to an open account that only open/have can see.

    SPEC §11: the registry names no principal, so the group's is the one the accounts seen bound to the
    group's open account share (all of them: of several, none is told, and WeChat judges each bind); an
    unbound account of another principal can only be bound in the Open Platform console
    (``console_binding_needed``)."""
    sets: dict[str, set[int]] = {}
    for (_, appid), func_ids in live_pairs(state).items():
        sets.setdefault(appid, set()).update(func_ids)
    seen_bound = Counter(
        a["principal_name"]
        for a in state["authorizers"]
        if a["open_appid"] == GROUP_OPEN and MANAGE_SET[a["kind"]] in sets.get(a["authorizer_appid"], ())
    )
    group_principal = next(iter(seen_bound)) if len(seen_bound) == 1 else None

    def unbound(account: dict[str, Any]) -> str:
        if group_principal is None or account["principal_name"] == group_principal:
            return "unbound"
        return "console_binding_needed"

    expected: dict[str, tuple[str, str | None]] = {}
    unidentified = 0
    for account in state["authorizers"]:
        appid, kind, bound_to = account["authorizer_appid"], account["kind"], account["open_appid"]
        if appid not in sets:
            continue
        if MANAGE_SET[kind] in sets[appid]:
            if bound_to is None:
                expected[appid] = (unbound(account), None)
            else:
                expected[appid] = ("bound" if bound_to == GROUP_OPEN else "bound_elsewhere", bound_to)
        elif HAVE_SET[kind] in sets[appid]:
            expected[appid] = ("unknown", None) if bound_to else (unbound(account), None)
            unidentified += bound_to is not None
        else:
            expected[appid] = ("unknown", None)
    return expected, unidentified


async def stored_authorizations(world: World) -> dict[tuple[str, str], tuple[list[int], str]]:
    async with world.services.store.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT platform_id, authorizer_appid, func_ids, status FROM authorizations")
        )
        return {(r[0], r[1]): ([int(i) for i in r[2].split(",") if i], r[3]) for r in rows}


async def stored_profiles(world: World) -> dict[str, tuple[Any, ...]]:
    async with world.services.store.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT authorizer_appid, kind, nick_name, principal_name, verify_type, binding, open_appid "
                "FROM authorizer_profiles"
            )
        )
        return {r[0]: tuple(r[1:]) for r in rows}


async def info_calls(world: World) -> tuple[int, int, dict[str, int]]:
    """api_get_authorizer_info: calls, successful calls, calls per authorizer."""
    counter = (await world.counters()).get("api_get_authorizer_info", {"total": 0, "ok": 0, "by_key": {}})
    return counter["total"], counter["ok"], counter["by_key"]


async def test_a_sync_brings_every_authorizer_of_every_component_into_the_catalog(ready: World) -> None:
    await seed(ready, 1000)
    state = await sim_state(ready)
    pairs = live_pairs(state)

    summary = await ready.services.catalog_sync.run()

    assert summary.failures == 0, summary.problems
    assert summary.platforms == ["retail", "finance"]
    assert summary.authorizations == len(pairs)
    assert summary.new == len(pairs) - 1  # OA was authorized through the gateway already
    assert summary.authorizers == 1001
    # Exactly one api_get_authorizer_info per (component, authorizer), every one answered.
    total, ok, by_key = await info_calls(ready)
    assert total == ok == len(pairs)
    assert by_key == dict(Counter(appid for _, appid in pairs))

    stored = await stored_authorizations(ready)
    assert stored == {pair: (sorted(func_ids), "active") for pair, func_ids in pairs.items()}
    tokens = {
        (platform, a.authorizer_appid): token
        for platform in ("retail", "finance")
        for a, token in await ready.services.store.authorizations.of_platform(platform)
    }
    assert tokens == {
        (PLATFORM_OF[a["component_appid"]], a["authorizer_appid"]): a["refresh_token"]
        for a in state["authorizations"]
    }

    profiles = await stored_profiles(ready)
    expected, unidentified = expected_binding(state)
    assert profiles == {
        a["authorizer_appid"]: (
            a["kind"],
            a["nick_name"],
            a["principal_name"],
            a["verify_type"],
            *expected[a["authorizer_appid"]],
        )
        for a in state["authorizers"]
    }
    assert summary.bindings == dict(Counter(state for state, _ in expected.values()))
    assert summary.bound_unidentified == unidentified
    # A new authorization is usable at once.
    assert (await ready.token(next(a for _, a in pairs if a != OA))).status_code == 200


async def test_a_second_sync_revokes_what_wechat_revoked_and_reactivates_what_came_back(ready: World) -> None:
    accounts = await seed(ready, 40, seed=7)
    assert (await ready.services.catalog_sync.run()).failures == 0
    both = next(a for a in accounts if len(a["components"]) == 2)
    appid = both["authorizer_appid"]
    body = {"component_appid": FINANCE["appid"], "authorizer_appid": appid}
    (await ready.sim.post("/sim/authorizations/revoke", json=body)).raise_for_status()  # event left unhandled
    await ready.reset_counters()

    summary = await ready.services.catalog_sync.run()

    assert (summary.revoked, summary.new, summary.updated, summary.failures) == (1, 0, 0, 0)
    pairs = live_pairs(await sim_state(ready))
    total, ok, _ = await info_calls(ready)
    assert (total, ok) == (len(pairs) + 1, len(pairs))  # the unlisted one asked about once, to confirm
    stored = await stored_authorizations(ready)
    assert stored[("finance", appid)][1] == "revoked"
    assert stored[("retail", appid)][1] == "active"
    assert (await ready.token(appid)).json()["platform"] == "retail"

    # Authorized again (no push reaches the gateway): the next sync finds it and takes the new token.
    (await ready.sim.post("/sim/authorizers", json=both)).raise_for_status()
    summary = await ready.services.catalog_sync.run()
    assert (summary.revoked, summary.new, summary.updated, summary.failures) == (0, 0, 1, 0)
    assert (await stored_authorizations(ready))[("finance", appid)][1] == "active"
    state = await sim_state(ready)
    fresh = next(
        a["refresh_token"]
        for a in state["authorizations"]
        if a["authorizer_appid"] == appid and a["component_appid"] == FINANCE["appid"]
    )
    assert await ready.services.store.authorizations.refresh_token("finance", appid) == fresh


async def test_lost_and_refused_refresh_tokens_are_recovered_from_the_list(ready: World) -> None:
    accounts = await seed(ready, 30, seed=8)
    assert (await ready.services.catalog_sync.run()).failures == 0
    on_retail = [a for a in accounts if RETAIL["appid"] in a["components"]]
    lost, refused, changed = on_retail[0], on_retail[1], on_retail[2]
    store = ready.services.store
    async with store.engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE authorizations SET refresh_token_sealed = NULL "
                "WHERE platform_id = 'retail' AND authorizer_appid = :appid"
            ),
            {"appid": lost["authorizer_appid"]},
        )
    func_ids = frozenset(refused["components"][RETAIL["appid"]])
    await store.authorizations.authorize("retail", refused["authorizer_appid"], "refused-by-wechat", func_ids)
    await store.authorizations.set_status("retail", refused["authorizer_appid"], "reauthorization_required")
    extra = 7 if changed["kind"] == "official_account" else 52  # broadcast / live streaming: not exclusive
    changed["components"][RETAIL["appid"]].append(extra)
    (await ready.sim.post("/sim/authorizers", json=changed)).raise_for_status()
    ready.services.authorizations.forget_grants(refused["authorizer_appid"])

    summary = await ready.services.catalog_sync.run()

    assert (summary.refresh_tokens_recovered, summary.updated, summary.failures) == (2, 1, 0)
    state = await sim_state(ready)
    on_wechat = {
        a["authorizer_appid"]: a["refresh_token"]
        for a in state["authorizations"]
        if a["component_appid"] == RETAIL["appid"]
    }
    stored = await stored_authorizations(ready)
    for account in (lost, refused):
        appid = account["authorizer_appid"]
        assert await store.authorizations.refresh_token("retail", appid) == on_wechat[appid]
        assert stored[("retail", appid)][1] == "active"
        response = await ready.token(appid)
        assert response.status_code == 200, response.text
    assert extra in stored[("retail", changed["authorizer_appid"])][0]


async def test_a_transient_fault_is_retried(ready: World) -> None:
    await seed(ready, 20, seed=9)
    await ready.fault(endpoint="api_get_authorizer_info", errcode=-1, times=1)

    summary = await ready.services.catalog_sync.run()

    assert summary.failures == 0, summary.problems
    pairs = live_pairs(await sim_state(ready))
    total, ok, _ = await info_calls(ready)
    assert (total, ok) == (len(pairs) + 1, len(pairs))


async def test_quota_on_one_account_is_a_failure_that_stops_nothing_else(ready: World) -> None:
    accounts = await seed(ready, 20, seed=10)
    victim = next(a["authorizer_appid"] for a in accounts if len(a["components"]) == 1)
    await ready.fault(endpoint="api_get_authorizer_info", errcode=45009, key=victim)

    summary = await ready.services.catalog_sync.run()

    assert summary.failures == 1
    [problem] = summary.problems
    assert problem.authorizer_appid == victim and "45009" in problem.problem
    assert summary.authorizers == 20  # the 19 others and OA
    profiles = await stored_profiles(ready)
    assert victim not in profiles and len(profiles) == 20
    pairs = live_pairs(await sim_state(ready))
    assert set(await stored_authorizations(ready)) == {pair for pair in pairs if pair[1] != victim}


async def test_an_exhausted_component_quota_is_not_hammered(ready: World) -> None:
    await seed(ready, 40, seed=11)
    await ready.fault(endpoint="api_get_authorizer_info", errcode=45009, key=FINANCE["appid"])

    summary = await ready.services.catalog_sync.run(concurrency=4)

    pairs = live_pairs(await sim_state(ready))
    on_finance = sum(1 for platform, _ in pairs if platform == "finance")
    assert on_finance > 20
    assert summary.failures == on_finance
    assert all(p.platform_id == "finance" for p in summary.problems)
    total, _, _ = await info_calls(ready)
    assert total <= len(pairs) - on_finance + QUOTA_STRIKES + 4  # a few in flight when the breaker trips


async def test_a_platform_whose_list_cannot_be_read_is_left_alone(ready: World) -> None:
    await seed(ready, 10, seed=12)
    await ready.fault(endpoint="api_get_authorizer_list", errcode=45009, key=RETAIL["appid"])

    summary = await ready.services.catalog_sync.run()

    [problem] = summary.problems
    assert (problem.platform_id, problem.authorizer_appid) == ("retail", None)
    assert "authorizer list" in problem.problem
    stored = await stored_authorizations(ready)
    assert stored[("retail", OA)][1] == "active"  # not revoked for want of a list
    assert {platform for platform, _ in stored} == {"retail", "finance"}
    pairs = live_pairs(await sim_state(ready))
    total, _, _ = await info_calls(ready)
    assert total == sum(1 for platform, _ in pairs if platform == "finance")


async def test_the_number_of_calls_at_a_time_is_bounded(
    ready: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    await seed(ready, 24, seed=13)
    in_flight = 0
    most: list[int] = []  # the most requests to WeChat in flight at once, per sync
    original = WeChatClient._attempt  # one HTTP request to WeChat

    async def counted(self: WeChatClient, *args: Any, **kwargs: Any) -> Any:
        nonlocal in_flight
        in_flight += 1
        most[-1] = max(most[-1], in_flight)
        try:
            return await original(self, *args, **kwargs)
        finally:
            in_flight -= 1

    monkeypatch.setattr(WeChatClient, "_attempt", counted)
    await ready.fault(endpoint="api_get_authorizer_info", delay_s=0.1)  # so that calls overlap
    for concurrency in (4, 64):
        most.append(0)
        assert (await ready.services.catalog_sync.run(concurrency=concurrency)).failures == 0

    assert most[0] == 4
    assert most[1] > 4


async def test_the_schedule_syncs_on_one_replica_which_keeps_the_lease_until_the_next_sync(
    ready: World,
) -> None:
    await seed(ready, 10, seed=14)
    credentials, sync = ready.services.store.credentials, ready.services.catalog_sync

    async def schedule_for(seconds: float) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(sync.run_schedule(stop, interval_s=3600, first_delay_s=0.01))
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.wait_for(task, timeout=5)

    assert await credentials.try_lease(JOB_KEY, "other-replica", 30) is not None  # it is syncing
    await schedule_for(0.3)
    assert await ready.calls("api_get_authorizer_list") == 0  # so this one skipped

    await credentials.release(JOB_KEY, "other-replica")
    stop = asyncio.Event()
    task = asyncio.create_task(sync.run_schedule(stop, interval_s=3600, first_delay_s=0.01))
    try:
        for _ in range(500):
            lease = await credentials.get(JOB_KEY)
            if lease is not None and (lease.lease_until or 0) > time.time() + 3000:
                break  # synced, and holding the lease for most of the interval
            await asyncio.sleep(0.02)
        assert await ready.calls("api_get_authorizer_list") == 2  # one sync of both platforms
        assert len(await stored_profiles(ready)) == 11
        assert await credentials.try_lease(JOB_KEY, "other-replica", 30) is None  # the others skip
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)


async def test_a_scheduled_sync_stops_with_the_server_and_gives_the_lease_up(ready: World) -> None:
    await seed(ready, 10, seed=15)
    await ready.fault(endpoint="api_get_authorizer_info", delay_s=5)
    stop = asyncio.Event()
    schedule = asyncio.create_task(ready.services.catalog_sync.run_schedule(stop, 3600, first_delay_s=0.01))
    for _ in range(200):
        if await ready.calls("api_get_authorizer_info"):
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(schedule, timeout=2)
    lease = await ready.services.store.credentials.get(JOB_KEY)
    assert lease is not None and lease.lease_owner is None


@pytest.mark.parametrize(("value", "interval"), [(None, 21600.0), ("0", 0.0), ("3600", 3600.0), ("60", 60.0)])
def test_the_schedule_is_configured_from_the_environment(value: str | None, interval: float) -> None:
    env = {"GATEWAY_SECRET_KEY": "A" * 43 + "="}
    if value is not None:
        env["GATEWAY_CATALOG_SYNC_INTERVAL_S"] = value
    assert Settings.from_environ(env).catalog_sync_interval_s == interval


@pytest.mark.parametrize("value", ["soon", "30", "-1", "nan", "inf"])
def test_a_bad_schedule_is_refused(value: str) -> None:
    env = {"GATEWAY_SECRET_KEY": "A" * 43 + "=", "GATEWAY_CATALOG_SYNC_INTERVAL_S": value}
    with pytest.raises(ConfigError, match="GATEWAY_CATALOG_SYNC_INTERVAL_S"):
        Settings.from_environ(env)

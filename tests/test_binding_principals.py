"""SPEC §11 against the simulator: a group with three principals (scenario two) and a service provider
operating several merchants' accounts (scenario one, ``mode: per_principal``); SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text

from gateway.cli.binding import print_console_list
from gateway.crypto import SecretBox
from gateway.errors import BindingRefused
from gateway.http.errors import status_of
from gateway.registry.model import Registry, parse_registry
from gateway.store import Store, create_engine
from gateway.store.migrate import upgrade
from tests.conftest import CLIENT_KEYS, REGISTRY_YAML, registry_environ
from tests.support.flows import push_ticket
from tests.support.world import FINANCE, RETAIL, World, open_world

GROUP_LINE = "group: {name: Test Group, open_appid: wx0pen0000000001}"

# Scenario two: the group, a listed subsidiary, and a principal outside both.
GROUP_OPEN, FIN_OPEN, STRAY_OPEN = "wx0pen0000000001", "wx0pen0000000002", "wx0pen0000000009"
GROUP_P, FIN_P, OUT_P = "ACME Group Co., Ltd.", "ACME Finance Co., Ltd.", "Outside Trading Co., Ltd."
G0, G1, G2, G3 = "wxa0000000000100", "wxa0000000000101", "wxb0000000000102", "wxa0000000000103"
F1, X1 = "wxa0000000000201", "wxa0000000000301"

GROUP_REGISTRY = f"""
group:
  name: ACME Group
  open_appid: {GROUP_OPEN}
  principal_name: "{GROUP_P}"
  binding:
    mode: group
    open_accounts:
      - {{open_appid: {FIN_OPEN}, principal_name: "{FIN_P}"}}
"""

# Scenario one: a service provider (SP) and its merchants A (listed), B (bound already), C (seven
# accounts: one open account made for it, which takes five), D (console-bound to the SP's).
SP_OPEN, A_OPEN, B_OPEN = "wx0pen0000000010", "wx0pen0000000011", "wx0pen0000000012"
SP_P, A_P, B_P, C_P, D_P = "SP Co.", "Merchant A", "Merchant B", "Merchant C", "Merchant D"
S1, A1, A2, B1, B2, D1 = (
    "wxs0000000000001",
    "wxa0000000000011",
    "wxa0000000000012",
    "wxb0000000000021",
    "wxb0000000000022",
    "wxd0000000000041",
)
CS = [f"wxc00000000000{i}{i}" for i in range(1, 8)]

SP_REGISTRY = f"""
group:
  name: SP
  open_appid: {SP_OPEN}
  principal_name: "{SP_P}"
  binding:
    mode: per_principal
    open_accounts:
      - {{open_appid: {A_OPEN}, principal_name: "{A_P}"}}
"""


def registry_with(group_yaml: str) -> Registry:
    return parse_registry(
        REGISTRY_YAML.replace(GROUP_LINE, group_yaml.strip()), source="test", environ=registry_environ()
    )


async def authorize(world: World, appid: str, principal: str) -> None:
    kind = "mini_program" if appid.startswith("wxb") else "official_account"
    sets = [17, 25] if kind == "mini_program" else [1, 24]
    await world.authorize("retail", appid, sets, kind=kind, principal_name=principal)


async def seed_open(world: World, open_appid: str, principal: str, members: list[str]) -> None:
    body = {"open_appid": open_appid, "principal_name": principal, "verified": True, "members": members}
    (await world.sim.post("/sim/open-accounts", json=body)).raise_for_status()


async def open_accounts(world: World) -> dict[str, dict[str, Any]]:
    state = (await world.sim.get("/sim/state")).json()
    return {a["open_appid"]: a for a in state["open_accounts"]}


async def bindings_in_db(world: World) -> list[tuple[Any, ...]]:
    """Everything the binding work writes: profiles' bindings, created open accounts, the audit log."""
    await world.services.audit.flush()
    async with world.services.store.engine.connect() as conn:
        profiles = await conn.execute(
            text(
                "SELECT authorizer_appid, binding, open_appid, binding_target, binding_checked_at "
                "FROM authorizer_profiles ORDER BY authorizer_appid"
            )
        )
        created = await conn.execute(text("SELECT open_appid FROM open_accounts ORDER BY open_appid"))
        audit = await conn.execute(text("SELECT count(*) FROM audit_log"))
        return [*profiles.all(), *created.all(), *audit.all()]


async def catalog(world: World, **params: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {CLIENT_KEYS['audit']}"}
    response = await world.gateway.get("/v1/catalog", params=params, headers=headers)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def bind_api(world: World, appid: str) -> Any:
    headers = {"Authorization": f"Bearer {CLIENT_KEYS['onboarding']}"}
    return await world.gateway.post(f"/v1/authorizers/{appid}/open-binding", headers=headers)


async def ready_world(registry: Registry, database_url: str, secret_box: SecretBox) -> AsyncIterator[World]:
    async with open_world(registry, database_url, secret_box) as world:
        for values in (RETAIL, FINANCE):
            assert (await push_ticket(world.sim, values["appid"]))["body"] == "success"
        yield world


@pytest.fixture
async def group(database_url: str, secret_box: SecretBox) -> AsyncIterator[World]:
    async for world in ready_world(registry_with(GROUP_REGISTRY), database_url, secret_box):
        for appid, principal in ((G0, GROUP_P), (G1, GROUP_P), (G2, GROUP_P), (G3, GROUP_P)):
            await authorize(world, appid, principal)
        await authorize(world, F1, FIN_P)
        await authorize(world, X1, OUT_P)
        await seed_open(world, GROUP_OPEN, GROUP_P, [G0])
        await seed_open(world, FIN_OPEN, FIN_P, [])
        await seed_open(world, STRAY_OPEN, GROUP_P, [G3])  # the group's principal, another open account
        await world.reset_counters()
        yield world


@pytest.fixture
async def provider(database_url: str, secret_box: SecretBox) -> AsyncIterator[World]:
    async for world in ready_world(registry_with(SP_REGISTRY), database_url, secret_box):
        for appid, principal in (
            (S1, SP_P),
            (A1, A_P),
            (A2, A_P),
            (B1, B_P),
            (B2, B_P),
            (D1, D_P),
            *((c, C_P) for c in CS),
        ):
            await authorize(world, appid, principal)
        await seed_open(world, SP_OPEN, SP_P, [D1])  # bound in the console, across principals
        await seed_open(world, A_OPEN, A_P, [])
        await seed_open(world, B_OPEN, B_P, [B1])
        await world.reset_counters()
        yield world


def plan_of(result: Any) -> dict[str, tuple[str | None, str | None]]:
    return {
        row.appid: (row.step.action, row.step.target if row.step.creator is None else row.step.creator)
        for row in result.rows
    }


async def test_group_mode_binds_by_principal_and_leaves_the_console_its_part(group: World) -> None:
    binding = group.services.binding
    before = await bindings_in_db(group)

    planned = await binding.run_pass(actor="test", dry_run=True, record=False)
    assert plan_of(planned) == {
        G0: ("nothing", GROUP_OPEN),
        G1: ("bind", GROUP_OPEN),
        G2: ("bind", GROUP_OPEN),
        G3: ("conflict", GROUP_OPEN),  # bound elsewhere: an audit finding, never changed
        F1: ("bind", FIN_OPEN),  # the listed subsidiary: its own open account, same principal
        X1: ("console", GROUP_OPEN),  # another principal: only the console can bind it
    }
    assert await group.calls("open/bind") == 0 and await group.calls("open/create") == 0
    assert await bindings_in_db(group) == before  # a dry run records nothing

    done = await binding.run_pass(actor="test", dry_run=False)
    assert {row.appid: row.result for row in done.rows} == {
        G0: "bound",
        G1: "newly_bound",
        G2: "newly_bound",
        G3: "bound_elsewhere",
        F1: "newly_bound",
        X1: "console_binding_needed",
    }
    assert await group.calls("open/bind") == 3
    assert await group.calls("open/bind", X1) == 0  # never sent across principals
    assert await group.calls("open/create") == 0
    accounts = await open_accounts(group)
    assert sorted(accounts[GROUP_OPEN]["members"]) == [G0, G1, G2]
    assert accounts[FIN_OPEN]["members"] == [F1]
    assert accounts[STRAY_OPEN]["members"] == [G3]

    again = await binding.run_pass(actor="test", dry_run=False)
    assert {row.step.action for row in again.rows if row.step} == {"nothing", "conflict", "console"}
    assert await group.calls("open/bind") == 3 and await group.calls("open/create") == 0

    refused = await bind_api(group, X1)
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "principal_mismatch"
    assert GROUP_OPEN in refused.json()["error"]["message"]
    assert await group.calls("open/bind") == 3

    await group.services.catalog_sync.run()
    rows = {r["authorizer_appid"]: (r["binding"], r["open_appid"]) for r in (await catalog(group))["items"]}
    assert rows == {
        G0: ("bound", GROUP_OPEN),
        G1: ("bound", GROUP_OPEN),
        G2: ("bound", GROUP_OPEN),
        G3: ("bound_elsewhere", STRAY_OPEN),
        F1: ("bound", FIN_OPEN),
        X1: ("console_binding_needed", None),
    }
    needing = await catalog(group, binding="console_binding_needed")
    assert [r["authorizer_appid"] for r in needing["items"]] == [X1]


async def test_an_unlisted_principal_is_refused_by_the_api_without_calling_wechat(group: World) -> None:
    response = await bind_api(group, X1)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "principal_mismatch"
    assert await group.calls("open/bind") == 0
    assert (await bind_api(group, F1)).json() == {"state": "newly_bound", "open_appid": FIN_OPEN}
    assert (await bind_api(group, G1)).json() == {"state": "newly_bound", "open_appid": GROUP_OPEN}
    assert await group.calls("open/bind") == 2


async def test_per_principal_each_merchant_gets_its_own_open_account(provider: World) -> None:
    binding = provider.services.binding
    before = await bindings_in_db(provider)

    planned = await binding.run_pass(actor="test", dry_run=True, record=False)
    first = CS[0]
    assert (
        plan_of(planned)
        == {
            S1: ("bind", SP_OPEN),
            A1: ("bind", A_OPEN),
            A2: ("bind", A_OPEN),
            B1: ("nothing", B_OPEN),
            B2: ("bind", B_OPEN),  # the open account its principal's accounts already use
            D1: ("conflict", None),  # on the SP's open account: another principal's, never shared
            first: ("create_then_bind", first),
            **{c: ("bind", first) for c in CS[1:5]},  # to the one CS[0] creates: five in all
            **{c: ("conflict", first) for c in CS[5:]},  # it would hold more than five: refused up front
        }
    )
    assert {row.appid: row.step.reason for row in planned.rows if row.step.action == "conflict"} == {
        D1: "bound_elsewhere",
        CS[5]: "open_account_full",
        CS[6]: "open_account_full",
    }
    assert await provider.calls("open/bind") == 0 and await provider.calls("open/create") == 0
    assert await bindings_in_db(provider) == before

    done = await binding.run_pass(actor="test", dry_run=False)
    results = {row.appid: row.result for row in done.rows}
    assert results[first] == "created"
    assert [results[c] for c in CS[1:]] == ["newly_bound"] * 4 + ["unbound"] * 2
    assert await provider.calls("open/create") == 1
    assert await provider.calls("open/bind") == 1 + 2 + 1 + 4  # S1, A1 A2, B2, four of merchant C
    assert await provider.calls("open/bind", CS[5]) == 0 and await provider.calls("open/bind", CS[6]) == 0

    accounts = await open_accounts(provider)
    made = next(row.step.target for row in done.rows if row.appid == first)
    assert made is not None and made not in (SP_OPEN, A_OPEN, B_OPEN)
    assert accounts[made]["principal_name"] == C_P and accounts[made]["created_by_api"] is True
    assert sorted(accounts[made]["members"]) == sorted(CS[:5])
    assert accounts[SP_OPEN]["members"] == [D1, S1]
    assert sorted(accounts[A_OPEN]["members"]) == [A1, A2]
    assert sorted(accounts[B_OPEN]["members"]) == [B1, B2]
    stored = [
        (r.open_appid, r.principal_name, r.created_from)
        for r in await provider.services.store.open_accounts.all()
    ]
    assert stored == [(made, C_P, first)]

    again = await binding.run_pass(actor="test", dry_run=False)
    assert {row.appid: row.step.action for row in again.rows if row.step}[CS[5]] == "conflict"
    assert await provider.calls("open/create") == 1 and await provider.calls("open/bind") == 8

    full = await bind_api(provider, CS[6])
    assert full.status_code == 409 and full.json()["error"]["code"] == "open_account_full"
    assert await provider.calls("open/bind") == 8

    await provider.services.catalog_sync.run()
    rows = {r["authorizer_appid"]: r["binding"] for r in (await catalog(provider))["items"]}
    assert rows == {
        S1: "bound",
        A1: "bound",
        A2: "bound",
        B1: "bound",
        B2: "bound",
        D1: "bound_elsewhere",
        **{c: "bound" for c in CS[:5]},
        CS[5]: "unbound",
        CS[6]: "unbound",
    }


async def test_per_principal_api_creates_the_first_open_account_of_a_principal(provider: World) -> None:
    created = await bind_api(provider, CS[0])
    assert created.status_code == 200, created.text
    made = created.json()["open_appid"]
    assert created.json()["state"] == "newly_bound" and made not in (SP_OPEN, A_OPEN, B_OPEN)
    second = await bind_api(provider, CS[1])
    assert second.json() == {"state": "newly_bound", "open_appid": made}
    assert await provider.calls("open/create") == 1 and await provider.calls("open/bind") == 1
    assert sorted((await open_accounts(provider))[made]["members"]) == sorted(CS[:2])


async def test_two_accounts_of_a_new_principal_at_once_make_one_open_account(provider: World) -> None:
    # WeChat gives each open/create of one principal a different open account (protocol §6 rule 2): the
    # principal's claim makes the second wait for the first's, then bind to it.
    first, second = await asyncio.gather(bind_api(provider, CS[0]), bind_api(provider, CS[1]))
    assert first.status_code == 200 and second.status_code == 200, (first.text, second.text)
    made = {first.json()["open_appid"], second.json()["open_appid"]}
    assert len(made) == 1 and {first.json()["state"], second.json()["state"]} == {"newly_bound"}
    assert await provider.calls("open/create") == 1 and await provider.calls("open/bind") == 1
    (open_appid,) = made
    assert sorted((await open_accounts(provider))[open_appid]["members"]) == sorted(CS[:2])
    assert [r.open_appid for r in await provider.services.store.open_accounts.all()] == [open_appid]
    async with provider.services.store.engine.connect() as conn:  # the claims leave no row behind
        left = await conn.execute(text("SELECT count(*) FROM credentials WHERE key LIKE 'binding:%'"))
        assert left.scalar_one() == 0


async def test_two_binds_at_once_to_a_capped_open_account_holding_four_send_one(provider: World) -> None:
    created = await bind_api(provider, CS[0])
    made = created.json()["open_appid"]
    for appid in CS[1:4]:
        assert (await bind_api(provider, appid)).json() == {"state": "newly_bound", "open_appid": made}
    assert await provider.calls("open/bind") == 3

    answers = await asyncio.gather(bind_api(provider, CS[4]), bind_api(provider, CS[5]))
    assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
    refused = next(a for a in answers if a.status_code == 409)
    assert refused.json()["error"]["code"] == "open_account_full"
    assert await provider.calls("open/bind") == 4  # the refused one never called
    assert len((await open_accounts(provider))[made]["members"]) == 5


async def test_the_migration_remembers_open_accounts_created_before_it(
    database_url: str, secret_box: SecretBox
) -> None:
    # Before 0012, `gateway open-binding create --from` left only its audit entry: such an open account
    # is unverified and API-made, so its cap must be counted too.
    engine = create_engine(database_url)
    try:
        await upgrade(engine, "0011")
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO authorizer_profiles (authorizer_appid, kind, nick_name, principal_name, "
                    "user_name, verify_type, service_type, account_status, synced_at) "
                    "VALUES (:appid, 'official_account', '', :principal, '', 0, 2, 1, 1)"
                ),
                {"appid": CS[0], "principal": C_P},
            )
            audit = (
                (100.0, "binding.created", CS[0], "wx0pen00000000c1"),
                (150.0, "binding.bound", CS[1], "wx0pen00000000c1"),
                (200.0, "binding.created", CS[2], "wx0pen00000000c1"),  # the same one again: the first wins
                (300.0, "binding.created", D1, "wx0pen00000000d1"),  # no profile: principal unknown
            )
            for at, action, appid, detail in audit:
                await conn.execute(
                    text(
                        "INSERT INTO audit_log (at, actor, action, authorizer_appid, detail) "
                        "VALUES (:at, 'cli', :action, :appid, :detail)"
                    ),
                    {"at": at, "action": action, "appid": appid, "detail": detail},
                )
        await upgrade(engine)
        store = Store(engine, secret_box)
        remembered = [
            (r.open_appid, r.principal_name, r.created_from, r.created_at, r.verified)
            for r in await store.open_accounts.all()
        ]
        assert remembered == [
            ("wx0pen00000000c1", C_P, CS[0], 100.0, False),
            ("wx0pen00000000d1", "", D1, 300.0, False),
        ]
    finally:
        await engine.dispose()


async def test_a_reload_redecides_a_kept_binding_without_reading_it(group: World) -> None:
    # An idle account's binding is read only every GATEWAY_BINDING_RECHECK_S; its state and target follow
    # the registry at the next sync all the same (where it is bound is known: nothing to ask WeChat).
    await group.services.catalog_sync.run()
    rows = {r["authorizer_appid"]: r for r in (await catalog(group))["items"]}
    assert (rows[X1]["binding"], rows[X1]["binding_target"]) == ("console_binding_needed", GROUP_OPEN)
    async with group.services.store.engine.connect() as conn:
        checked = (
            await conn.execute(
                text("SELECT binding_checked_at FROM authorizer_profiles WHERE authorizer_appid = :a"),
                {"a": X1},
            )
        ).scalar_one()

    out_open = "wx0pen0000000003"
    listed = GROUP_REGISTRY + f'      - {{open_appid: {out_open}, principal_name: "{OUT_P}"}}\n'
    group.services.registry.swap(registry_with(listed))
    await group.expire_everything()  # idle: tokens lapsed, so the bindings are kept
    await group.reset_counters()
    summary = await group.services.catalog_sync.run()
    assert summary.bindings_kept == 6 and await group.calls("open/get") == 0

    rows = {r["authorizer_appid"]: r for r in (await catalog(group))["items"]}
    assert (rows[X1]["binding"], rows[X1]["open_appid"], rows[X1]["binding_target"]) == (
        "unbound",
        None,
        out_open,
    )
    assert (rows[G3]["binding"], rows[G3]["open_appid"]) == ("bound_elsewhere", STRAY_OPEN)
    assert (rows[G0]["binding"], rows[G1]["binding"], rows[F1]["binding_target"]) == (
        "bound",
        "unbound",
        FIN_OPEN,
    )
    async with group.services.store.engine.connect() as conn:
        after = (
            await conn.execute(
                text("SELECT binding_checked_at FROM authorizer_profiles WHERE authorizer_appid = :a"),
                {"a": X1},
            )
        ).scalar_one()
    assert after == checked  # not read: its recheck still comes on time


async def test_create_from_follows_the_plan(group: World) -> None:
    binding = group.services.binding
    # Its principal's open account is the group's: creating another would split the unionids.
    with pytest.raises(BindingRefused) as refused:
        await binding.create_from(G1, actor="test")
    assert status_of(refused.value) == 409 and refused.value.code == "open_account_exists"
    assert GROUP_OPEN in refused.value.message and "--force" in refused.value.message
    assert await group.calls("open/create") == 0
    # Forced, it is made; the account's target stays the group's (§11), so it is bound elsewhere.
    made, step = await binding.create_from(G1, actor="test", force=True)
    assert (step.state, step.target) == ("bound_elsewhere", GROUP_OPEN)
    facts = {f.authorizer_appid: f for f in await group.services.store.authorizations.binding_facts()}
    assert (facts[G1].binding, facts[G1].open_appid, facts[G1].target) == (
        "bound_elsewhere",
        made,
        GROUP_OPEN,
    )
    assert await group.calls("open/create") == 1


async def test_create_from_never_makes_a_second_open_account_of_a_principal(provider: World) -> None:
    # Merchant C has none yet: created, and its creator bound to it (§11: its principal's own).
    made, step = await provider.services.binding.create_from(CS[0], actor="test")
    assert (step.state, step.target) == ("bound", made)
    with pytest.raises(BindingRefused) as refused:
        await provider.services.binding.create_from(CS[1], actor="test")
    assert refused.value.code == "open_account_exists" and made in refused.value.message
    assert await provider.calls("open/create") == 1


async def test_create_from_refuses_an_account_whose_principal_is_unknown(group: World) -> None:
    nameless = "wxa0000000000401"
    await authorize(group, nameless, "")
    with pytest.raises(BindingRefused) as refused:
        await group.services.binding.create_from(nameless, actor="test")
    assert refused.value.code == "principal_unknown"
    assert await group.calls("open/create") == 0
    assert await group.services.store.open_accounts.all() == []


async def test_the_console_list_never_guesses_a_target(group: World) -> None:
    await group.services.binding.check(X1)
    out = io.StringIO()
    await print_console_list(group.services.store.authorizations, out, as_csv=True)
    assert out.getvalue().splitlines()[1].endswith(GROUP_OPEN)
    # A row without a recorded target (recorded before targets were): said so, not filled in.
    await group.services.store.authorizations.save_binding(X1, "console_binding_needed", None, None)
    out = io.StringIO()
    await print_console_list(group.services.store.authorizations, out, as_csv=True)
    assert GROUP_OPEN not in out.getvalue() and "open-binding check" in out.getvalue()


async def test_a_pass_and_the_api_at_once_make_one_open_account_per_principal(provider: World) -> None:
    done, answer = await asyncio.gather(
        provider.services.binding.run_pass(actor="test", dry_run=False), bind_api(provider, CS[6])
    )
    assert answer.status_code in (200, 409), answer.text
    assert await provider.calls("open/create") == 1
    made = [o for o, a in (await open_accounts(provider)).items() if a["principal_name"] == C_P]
    assert len(made) == 1
    members = (await open_accounts(provider))[made[0]]["members"]
    assert len(members) == 5 and set(members) <= set(CS)  # the cap held across both
    results = {row.appid: row.result for row in done.rows}
    assert sum(results[c] in ("created", "newly_bound") for c in CS) + (answer.status_code == 200) == 5

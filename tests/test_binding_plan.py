"""The binding planner (SPEC §11) on its own: targets by principal, the console, the 5-account cap."""

from __future__ import annotations

import logging
from typing import Any

from gateway.binding.plan import Account, CreatedOpenAccount, Planner, Rules

GROUP_OPEN, FIN_OPEN, MADE = "wx0pen0000000001", "wx0pen0000000002", "wx0pen00000000ff"
GROUP, FIN, OUT = "ACME Group Co., Ltd.", "ACME Finance Co., Ltd.", "Outside Co."

GROUP_RULES = Rules("group", GROUP_OPEN, GROUP, {"acme finance co., ltd.": FIN_OPEN})


def test_group_mode_targets_follow_the_principal() -> None:
    planner = Planner(GROUP_RULES, [])
    assert planner.step("wxa1", GROUP, None).action == "bind"
    assert planner.step("wxa1", GROUP, None).target == GROUP_OPEN
    # Spelled differently (case, spaces) it is the same principal.
    assert planner.step("wxa2", "acme  finance co., LTD.", None).target == FIN_OPEN
    outside = planner.step("wxa3", OUT, None)
    assert (outside.action, outside.state, outside.target, outside.reason) == (
        "console",
        "console_binding_needed",
        GROUP_OPEN,
        "principal_mismatch",
    )
    # Bound in the console to the group's open account: settled.
    assert planner.step("wxa3", OUT, GROUP_OPEN).state == "bound"
    elsewhere = planner.step("wxa4", GROUP, "wxsome0ther0001")
    assert (elsewhere.action, elsewhere.state) == ("conflict", "bound_elsewhere")
    # A listed principal's account on the group's open account is not on its target.
    assert planner.step("wxa5", FIN, GROUP_OPEN).state == "bound_elsewhere"


def test_without_a_registered_principal_the_bound_accounts_tell_it() -> None:
    rules = Rules("group", GROUP_OPEN, None)
    planner = Planner(rules, [Account("wxa1", GROUP, GROUP_OPEN), Account("wxa2", GROUP, GROUP_OPEN)])
    assert planner.group_principal == GROUP
    assert planner.step("wxa3", OUT, None).action == "console"
    # Nothing bound yet: nothing tells the principal, and WeChat judges, as before.
    assert Planner(rules, []).step("wxa3", OUT, None).action == "bind"


def test_an_unverified_open_account_the_gateway_made_takes_five() -> None:
    rules = Rules("group", MADE, GROUP)
    bound = [Account(f"wxa{i}", GROUP, MADE) for i in range(3)]
    planner = Planner(rules, bound, [CreatedOpenAccount(MADE, GROUP)])
    steps = planner.plan([Account(f"wxb{i}", GROUP, None) for i in range(4)])
    assert [s.action for s in steps] == ["bind", "bind", "conflict", "conflict"]
    assert steps[2].reason == "open_account_full" and steps[2].state == "unbound"
    # Verified, it takes more; one the gateway did not make is WeChat's to judge.
    verified = Planner(rules, bound, [CreatedOpenAccount(MADE, GROUP, verified=True)])
    assert {s.action for s in verified.plan([Account(f"wxb{i}", GROUP, None) for i in range(4)])} == {"bind"}


def test_per_principal_creates_once_per_principal_and_never_shares() -> None:
    rules = Rules("per_principal", GROUP_OPEN, GROUP, {"merchant a": "wx0pen00000000aa"})
    known = [Account("wxb1", "Merchant B", "wx0pen00000000bb"), Account("wxd1", "Merchant D", GROUP_OPEN)]
    planner = Planner(rules, known)
    steps = planner.plan(
        [
            Account("wxa1", "Merchant A", None),
            Account("wxb2", "Merchant B", None),
            Account("wxd1", "Merchant D", GROUP_OPEN),
            *(Account(f"wxc{i}", "Merchant C", None) for i in range(7)),
        ]
    )
    by_appid = {s.appid: s for s in steps}
    assert by_appid["wxa1"].target == "wx0pen00000000aa"
    assert by_appid["wxb2"].target == "wx0pen00000000bb"
    assert (by_appid["wxd1"].action, by_appid["wxd1"].reason) == ("conflict", "bound_elsewhere")
    assert by_appid["wxc0"].action == "create_then_bind"
    assert [by_appid[f"wxc{i}"].action for i in range(1, 7)] == ["bind"] * 4 + ["conflict"] * 2
    assert {by_appid[f"wxc{i}"].creator for i in range(7)} == {"wxc0"}
    # One account on its own: the first of its principal creates.
    assert Planner(rules, known).step("wxe1", "Merchant E", None).action == "create_then_bind"


def test_an_unknown_principal_is_never_bound() -> None:
    step = Planner(GROUP_RULES, []).step("wxa1", None, None)
    assert (step.action, step.state, step.reason) == ("conflict", "unknown", "principal_unknown")
    assert Planner(GROUP_RULES, []).step("wxa1", None, GROUP_OPEN).state == "bound"


def test_a_created_open_account_seen_holding_more_than_five_was_verified() -> None:
    rules = Rules("group", MADE, GROUP)
    bound = [Account(f"wxa{i}", GROUP, MADE) for i in range(6)]
    planner = Planner(rules, bound, [CreatedOpenAccount(MADE, GROUP)])
    assert planner.step("wxb1", GROUP, None).action == "bind"


def test_related_principals_on_the_group_open_account_tell_no_principal(caplog: Any) -> None:
    # Bound in the console, a subsidiary can outnumber the holding on the holding's open account: the
    # majority is no evidence. Nothing is guessed; WeChat judges each bind, and the log asks for
    # group.principal_name, once.
    group_open = "wx0pen00000000a1"
    rules = Rules("group", group_open, None)
    bound = [
        Account("wxa1", "Sub A", group_open),
        Account("wxa2", "Sub A", group_open),
        Account("wxh1", "Holding", group_open),
    ]
    with caplog.at_level(logging.WARNING, logger="gateway.binding.plan"):
        planner = Planner(rules, bound)
        Planner(rules, bound)
    assert planner.group_principal is None
    assert planner.step("wxh2", "Holding", None).action == "bind"
    assert planner.step("wxa3", "Sub A", None).action == "bind"
    warnings = [r for r in caplog.records if "group.principal_name" in r.getMessage()]
    assert len(warnings) == 1 and group_open in warnings[0].getMessage()


def test_the_principal_the_gateway_recorded_creating_the_group_open_account_comes_first() -> None:
    rules = Rules("group", MADE, None)
    bound = [Account("wxa1", "Sub A", MADE), Account("wxa2", "Sub A", MADE), Account("wxh1", "Holding", MADE)]
    planner = Planner(rules, bound, [CreatedOpenAccount(MADE, "Holding", verified=True)])
    assert planner.group_principal == "Holding"
    assert planner.step("wxh2", "Holding", None).action == "bind"
    assert planner.step("wxa3", "Sub A", None).action == "console"
    # Every bound account of one principal (spelled alike or not): that one.
    same = [Account("wxa1", "Sub A", MADE), Account("wxa2", " sub  a", MADE)]
    assert Planner(rules, same).group_principal == "Sub A"


def test_an_open_account_holding_several_principals_is_nobodys() -> None:
    # wxY holds one account of Alpha Sub and three of Zeta Parent (only the console binds across
    # principals): whose it is cannot be told, so neither principal adopts it, nor creates a second one.
    shared = "wx0pen000000000y"
    rules = Rules("per_principal", GROUP_OPEN, GROUP)
    known = [
        Account("wxa1", "Alpha Sub", shared),
        *(Account(f"wxz{i}", "Zeta Parent", shared) for i in range(1, 4)),
    ]
    fresh = [Account("wxa9", "Alpha Sub", None), Account("wxz9", "Zeta Parent", None)]
    steps = {s.appid: s for s in Planner(rules, [*known, *fresh]).plan([*known, *fresh])}
    assert {appid: (s.action, s.reason) for appid, s in steps.items()} == {
        appid: ("conflict", "open_account_shared") for appid in steps
    }
    assert steps["wxz1"].state == "unknown" and steps["wxz9"].state == "unbound"
    assert "group.binding.open_accounts" in steps["wxz9"].words and shared in steps["wxz9"].words
    # Listed for Zeta Parent, it is Zeta's: Alpha's account on it is an audit finding, and Alpha's
    # unbound account gets an open account of its own principal.
    listed = Rules("per_principal", GROUP_OPEN, GROUP, {"zeta parent": shared})
    steps = {s.appid: s for s in Planner(listed, [*known, *fresh]).plan([*known, *fresh])}
    assert {appid: s.action for appid, s in steps.items()} == {
        "wxa1": "conflict",
        "wxz1": "nothing",
        "wxz2": "nothing",
        "wxz3": "nothing",
        "wxa9": "create_then_bind",
        "wxz9": "bind",
    }
    assert steps["wxa1"].reason == "bound_elsewhere" and steps["wxz9"].target == shared

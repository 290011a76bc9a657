"""Open-platform account binding (protocol §6), with the authorizer_access_token of the account."""

from __future__ import annotations

import pytest

from tests.simulator.helpers import Sim

OA = "wxa0000000000001"
MP = "wxb0000000000002"
ACME = "ACME Retail Co., Ltd."
OTHER = "Other Co., Ltd."
OPEN = "wx0pen0000000001"


async def open_account(
    sim: Sim, *, verified: bool, created_by_api: bool, members: tuple[str, ...] = ()
) -> None:
    body = {
        "open_appid": OPEN,
        "principal_name": ACME,
        "verified": verified,
        "created_by_api": created_by_api,
    }
    await sim.control("POST", "/open-accounts", body | {"members": list(members)})


async def bound(sim: Sim, appid: str) -> str | None:
    state = await sim.control("GET", "/state")
    open_appid: str | None = {a["authorizer_appid"]: a["open_appid"] for a in state["authorizers"]}[appid]
    return open_appid


async def test_create_binds_the_caller_to_a_new_unverified_api_created_account(sim: Sim) -> None:
    token = await sim.account(OA, [1, 3, 24])
    assert await sim.errcode("/cgi-bin/open/get", {}, token=token) == 89002
    assert (await sim.wechat("/cgi-bin/open/have", token=token, method="GET"))["have_open"] is False

    created = await sim.wechat("/cgi-bin/open/create", {"appid": OA}, token=token)
    assert created["errcode"] == 0
    open_appid = created["open_appid"]
    assert await bound(sim, OA) == open_appid
    state = await sim.control("GET", "/state")
    assert state["open_accounts"] == [
        {
            "open_appid": open_appid,
            "principal_name": ACME,
            "verified": False,
            "created_by_api": True,
            "members": [OA],
        }
    ]
    assert (await sim.wechat("/cgi-bin/open/get", {}, token=token))["open_appid"] == open_appid
    assert (await sim.wechat("/cgi-bin/open/have", token=token, method="GET"))["have_open"] is True
    assert await sim.errcode("/cgi-bin/open/create", {}, token=token) == 89000


async def test_same_principal_accounts_that_each_create_get_different_open_accounts(sim: Sim) -> None:
    first = await sim.account(OA, [24])
    second = await sim.account(MP, [25], kind="mini_program")
    one = (await sim.wechat("/cgi-bin/open/create", {}, token=first))["open_appid"]
    two = (await sim.wechat("/cgi-bin/open/create", {}, token=second))["open_appid"]
    assert one != two


async def test_bind_to_an_api_created_account_of_the_same_principal(sim: Sim) -> None:
    creator = await sim.account(OA, [24])
    open_appid = (await sim.wechat("/cgi-bin/open/create", {}, token=creator))["open_appid"]
    joiner = await sim.account(MP, [25], kind="mini_program")
    result = await sim.wechat("/cgi-bin/open/bind", {"appid": MP, "open_appid": open_appid}, token=joiner)
    assert result["errcode"] == 0
    assert await bound(sim, MP) == open_appid
    assert await sim.errcode("/cgi-bin/open/bind", {"open_appid": open_appid}, token=joiner) == 89000


async def test_bind_refuses_another_principal(sim: Sim) -> None:
    await open_account(sim, verified=True, created_by_api=False)
    token = await sim.account(OA, [24], principal=OTHER)
    assert await sim.errcode("/cgi-bin/open/bind", {"open_appid": OPEN}, token=token) == 89001


async def test_bind_to_an_unverified_console_created_account_is_89036(sim: Sim) -> None:
    await open_account(sim, verified=False, created_by_api=False)
    token = await sim.account(OA, [24])
    assert await sim.errcode("/cgi-bin/open/bind", {"open_appid": OPEN}, token=token) == 89036


async def test_bind_to_a_verified_console_created_account_works(sim: Sim) -> None:
    await open_account(
        sim, verified=True, created_by_api=False, members=tuple(f"wxd00000000000{n:02d}" for n in range(8))
    )
    token = await sim.account(OA, [24])
    assert (await sim.wechat("/cgi-bin/open/bind", {"open_appid": OPEN}, token=token))["errcode"] == 0
    assert await bound(sim, OA) == OPEN


async def test_an_unverified_api_created_account_holds_five_members(sim: Sim) -> None:
    await open_account(
        sim, verified=False, created_by_api=True, members=tuple(f"wxd00000000000{n:02d}" for n in range(4))
    )
    fifth = await sim.account(OA, [24])
    assert (await sim.wechat("/cgi-bin/open/bind", {"open_appid": OPEN}, token=fifth))["errcode"] == 0
    sixth = await sim.account(MP, [25], kind="mini_program")
    assert await sim.errcode("/cgi-bin/open/bind", {"open_appid": OPEN}, token=sixth) == 89004


async def test_bind_to_an_unknown_open_account_is_40013(sim: Sim) -> None:
    token = await sim.account(OA, [24])
    assert await sim.errcode("/cgi-bin/open/bind", {"open_appid": "wx0pen0000000404"}, token=token) == 40013


async def test_unbind_only_from_api_created_accounts(sim: Sim) -> None:
    await open_account(sim, verified=True, created_by_api=False, members=(OA,))
    token = await sim.account(OA, [24])
    assert await sim.errcode("/cgi-bin/open/unbind", {"open_appid": OPEN}, token=token) == 89003

    other = await sim.account(MP, [25], kind="mini_program")
    open_appid = (await sim.wechat("/cgi-bin/open/create", {}, token=other))["open_appid"]
    assert (await sim.wechat("/cgi-bin/open/unbind", {"open_appid": open_appid}, token=other))["errcode"] == 0
    assert await bound(sim, MP) is None
    assert await sim.errcode("/cgi-bin/open/unbind", {"open_appid": open_appid}, token=other) == 89002


async def test_unbind_by_another_principal_is_89001(sim: Sim) -> None:
    await open_account(sim, verified=False, created_by_api=True, members=("wxd0000000000001",))
    token = await sim.account(OA, [24], principal=OTHER)
    assert await sim.errcode("/cgi-bin/open/unbind", {"open_appid": OPEN}, token=token) == 89001


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/cgi-bin/open/create", {"appid": MP}),
        ("/cgi-bin/open/bind", {"appid": MP, "open_appid": OPEN}),
        ("/cgi-bin/open/unbind", {"appid": MP, "open_appid": OPEN}),
        ("/cgi-bin/open/get", {"appid": MP}),
    ],
)
async def test_appid_in_the_body_must_be_the_tokens_account(
    sim: Sim, path: str, body: dict[str, str]
) -> None:
    await open_account(sim, verified=True, created_by_api=True, members=(OA,))
    token = await sim.account(OA, [24])
    assert await sim.errcode(path, body, token=token) == 40013


async def test_open_apis_need_set_24_or_25_by_kind_and_have_needs_3_or_30(sim: Sim) -> None:
    official = await sim.account(OA, [1, 2, 25])  # 25 is the mini-program set: no use to an official account
    assert await sim.errcode("/cgi-bin/open/create", {}, token=official) == 48001
    assert await sim.errcode("/cgi-bin/open/get", {}, token=official) == 48001
    assert await sim.errcode("/cgi-bin/open/have", token=official, method="GET") == 48001
    mini = await sim.account(MP, [25, 30], kind="mini_program")
    assert (await sim.wechat("/cgi-bin/open/have", token=mini, method="GET"))["have_open"] is False
    assert await sim.errcode("/cgi-bin/open/get", {}, token=mini) == 89002


async def test_open_apis_refuse_the_component_token(sim: Sim) -> None:
    token = await sim.component_token()
    assert await sim.errcode("/cgi-bin/open/create", {}, token=token) == 48001


async def test_seeding_refuses_a_member_bound_elsewhere(sim: Sim) -> None:
    await open_account(sim, verified=True, created_by_api=False, members=(OA,))
    body = {"open_appid": "wx0pen0000000002", "principal_name": ACME, "members": [OA]}
    await sim.control("POST", "/open-accounts", body, expect=409)

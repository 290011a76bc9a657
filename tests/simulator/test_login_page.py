"""The authorization page: choose an account, tick sets, approve, get redirected with the auth code."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from tests.simulator.helpers import FINANCE, RETAIL, Sim

OA = "wxa0000000000001"
MP = "wxb0000000000002"
PAGE = "/cgi-bin/componentloginpage"


async def pre_auth_code(sim: Sim) -> str:
    token = await sim.component_token()
    result = await sim.wechat(
        "/cgi-bin/component/api_create_preauthcode", {"component_appid": RETAIL.appid}, token=token
    )
    code: str = result["pre_auth_code"]
    return code


async def test_an_administrator_authorizes_through_the_page(sim: Sim) -> None:
    await sim.seed(OA, {FINANCE.appid: [1, 24]})
    await sim.seed(MP, {}, kind="mini_program")
    code = await pre_auth_code(sim)
    query = {
        "component_appid": RETAIL.appid,
        "pre_auth_code": code,
        "redirect_uri": "https://gw.test/cb",
        "auth_type": "1",
    }

    listing = await sim.client.get(PAGE, params=query)
    assert listing.status_code == 200
    assert listing.headers["content-type"].startswith("text/html")
    assert OA in listing.text
    assert MP not in listing.text  # auth_type 1: official accounts only

    choose = await sim.client.get(PAGE, params=query | {"authorizer_appid": OA})
    assert 'value="24" disabled' in choose.text  # exclusive, already granted to FINANCE
    assert 'value="2" checked' in choose.text

    form = {
        "pre_auth_code": code,
        "redirect_uri": "https://gw.test/cb",
        "authorizer_appid": OA,
        "func_id": ["1", "2"],
    }
    approved = await sim.client.post(PAGE, data=form, follow_redirects=False)
    assert approved.status_code == 303, approved.text
    target = urlsplit(approved.headers["location"])
    assert (target.netloc, target.path) == ("gw.test", "/cb")
    auth_code = parse_qs(target.query)["auth_code"][0]
    assert sim.inbox.decrypt()["AuthorizationCode"] == auth_code

    again = await sim.client.get(PAGE, params=query)
    assert again.status_code == 409  # the pre-auth code is spent


async def test_the_page_checks_the_component_and_the_account(sim: Sim) -> None:
    code = await pre_auth_code(sim)
    wrong = await sim.client.get(PAGE, params={"component_appid": FINANCE.appid, "pre_auth_code": code})
    assert wrong.status_code == 400
    unknown = await sim.client.get(
        PAGE, params={"component_appid": RETAIL.appid, "pre_auth_code": code, "biz_appid": OA}
    )
    assert unknown.status_code == 404

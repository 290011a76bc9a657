"""The authorization page: opened only from the component's 授权发起页域名, choose an account, tick sets,
approve, get redirected with the auth code; a pre-auth code serves one authorization and expires."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from tests.simulator.helpers import FINANCE, RETAIL, Sim

OA = "wxa0000000000001"
MP = "wxb0000000000002"
PAGE = "/cgi-bin/componentloginpage"
START = "http://gateway.test/wechat/retail/authorize?invite=abc"  # a page on the registered domain
REDIRECT = "http://gateway.test/wechat/retail/authorized"
EMPTY = "授权入口页所在域名：空"


async def pre_auth_code(sim: Sim) -> str:
    token = await sim.component_token()
    result = await sim.wechat(
        "/cgi-bin/component/api_create_preauthcode", {"component_appid": RETAIL.appid}, token=token
    )
    code: str = result["pre_auth_code"]
    return code


def page_query(code: str, **extra: str) -> dict[str, str]:
    return {"component_appid": RETAIL.appid, "pre_auth_code": code, "redirect_uri": REDIRECT} | extra


async def test_an_administrator_authorizes_through_the_page(sim: Sim) -> None:
    await sim.seed(OA, {FINANCE.appid: [1, 24]})
    await sim.seed(MP, {}, kind="mini_program")
    code = await pre_auth_code(sim)
    query = page_query(code, auth_type="1")

    listing = await sim.client.get(PAGE, params=query, headers={"Referer": START})
    assert listing.status_code == 200, listing.text
    assert listing.headers["content-type"].startswith("text/html")
    assert OA in listing.text
    assert MP not in listing.text  # auth_type 1: official accounts only

    # The next step is a link inside the page itself: its Referer is the page, and it opens.
    inside = f"http://api.weixin.test{PAGE}?{urlencode(query)}"
    choose = await sim.client.get(PAGE, params=query | {"authorizer_appid": OA}, headers={"Referer": inside})
    assert choose.status_code == 200, choose.text
    assert 'value="24" disabled' in choose.text  # exclusive, already granted to FINANCE
    assert 'value="2" checked' in choose.text

    form = {"pre_auth_code": code, "redirect_uri": REDIRECT, "authorizer_appid": OA, "func_id": ["1", "2"]}
    approved = await sim.client.post(PAGE, data=form, follow_redirects=False)
    assert approved.status_code == 303, approved.text
    target = urlsplit(approved.headers["location"])
    assert (target.netloc, target.path) == ("gateway.test", "/wechat/retail/authorized")
    auth_code = parse_qs(target.query)["auth_code"][0]
    assert sim.inbox.decrypt()["AuthorizationCode"] == auth_code


async def test_a_pre_auth_code_serves_one_authorization(sim: Sim) -> None:
    await sim.seed(OA, {})
    code = await pre_auth_code(sim)
    form = {"pre_auth_code": code, "redirect_uri": REDIRECT, "authorizer_appid": OA, "func_id": ["1"]}
    first = await sim.client.post(PAGE, data=form, follow_redirects=False)
    assert first.status_code == 303, first.text

    again = await sim.client.get(PAGE, params=page_query(code), headers={"Referer": START})
    assert again.status_code == 409
    assert "already used" in again.text
    second = await sim.client.post(PAGE, data=form, follow_redirects=False)
    assert second.status_code == 409
    assert "already used" in second.text
    kinds = [sim.inbox.decrypt(i)["InfoType"] for i in range(len(sim.inbox.requests))]
    assert kinds.count("authorized") == 1  # one authorization, one push


async def test_a_pre_auth_code_expires_with_its_expires_in(sim: Sim) -> None:
    token = await sim.component_token()
    result = await sim.wechat(
        "/cgi-bin/component/api_create_preauthcode", {"component_appid": RETAIL.appid}, token=token
    )
    await sim.control("POST", "/clock/advance", {"seconds": result["expires_in"]})
    page = await sim.client.get(PAGE, params=page_query(result["pre_auth_code"]), headers={"Referer": START})
    assert page.status_code == 410
    assert "expired" in page.text


async def test_without_a_referer_the_page_refuses_as_wechat_does(sim: Sim) -> None:
    code = await pre_auth_code(sim)
    for path in (PAGE, "/wxaopen/safe/bindcomponent", "/safe/bindcomponent"):
        refused = await sim.client.get(path, params=page_query(code))
        assert refused.status_code == 403, path
        assert EMPTY in refused.text
        assert "授权发起页域名相同" in refused.text
    # Refused pages spend nothing: from the right page, the code still opens.
    opened = await sim.client.get(PAGE, params=page_query(code), headers={"Referer": START})
    assert opened.status_code == 200


@pytest.mark.parametrize(
    ("referer", "redirect_uri", "entry"),
    [
        ("http://evil.test/phish", REDIRECT, "evil.test"),
        ("http://gateway.test.evil.test/", REDIRECT, "gateway.test.evil.test"),
        ("http://sub.gateway.test/", REDIRECT, "sub.gateway.test"),
        (START, "http://evil.test/wechat/retail/authorized", "gateway.test"),  # the redirect URI off it
        ("not a url", REDIRECT, "空"),
    ],
)
async def test_a_referer_off_the_registered_domain_is_refused(
    sim: Sim, referer: str, redirect_uri: str, entry: str
) -> None:
    code = await pre_auth_code(sim)
    refused = await sim.client.get(
        PAGE, params=page_query(code, redirect_uri=redirect_uri), headers={"Referer": referer}
    )
    assert refused.status_code == 403
    assert f"授权入口页所在域名：{entry}" in refused.text


async def test_the_registered_domain_comes_from_the_control_api(sim: Sim) -> None:
    code = await pre_auth_code(sim)
    moved = {
        "appid": RETAIL.appid,
        "secret": RETAIL.secret,
        "token": RETAIL.token,
        "encoding_aes_key": RETAIL.encoding_aes_key,
        "auth_domain": "onboard.example.com:8443",
    }
    await sim.control("POST", "/components", moved)
    there = "https://onboard.example.com:8443/wechat/retail/authorized"
    old = await sim.client.get(PAGE, params=page_query(code), headers={"Referer": START})
    assert old.status_code == 403
    other_port = await sim.client.get(
        PAGE,
        params=page_query(code, redirect_uri=there),
        headers={"Referer": "https://onboard.example.com:9443/"},
    )
    assert other_port.status_code == 403  # a port in the registered domain is part of it
    opened = await sim.client.get(
        PAGE,
        params=page_query(code, redirect_uri=there),
        headers={"Referer": "https://onboard.example.com:8443/"},
    )
    assert opened.status_code == 200, opened.text
    await sim.control("POST", "/components", moved | {"auth_domain": None})
    none = await sim.client.get(
        PAGE,
        params=page_query(code, redirect_uri=there),
        headers={"Referer": "https://onboard.example.com:8443/"},
    )
    assert none.status_code == 403
    assert "auth_domain" in none.text


async def test_the_page_checks_the_component_and_the_account(sim: Sim) -> None:
    code = await pre_auth_code(sim)
    headers = {"Referer": START}
    wrong = await sim.client.get(
        PAGE, params=page_query(code, component_appid=FINANCE.appid), headers=headers
    )
    assert wrong.status_code == 400
    unknown = await sim.client.get(PAGE, params=page_query(code, biz_appid=OA), headers=headers)
    assert unknown.status_code == 404

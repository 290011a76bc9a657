"""Onboarding against the simulator: link → approval → redirect and event (either order) → binding →
revocation → 410."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from gateway.store import RecordedEvent
from gateway.xml import Authorized, FastRegister
from tests.conftest import CLIENT_KEYS
from tests.support.flows import push_ticket
from tests.support.world import FINANCE, OA, RETAIL, World

NEW = "wxd0000000000004"  # an account about to be onboarded
GROUP_OPEN = "wx0pen0000000001"  # the test registry's binding open account
PRINCIPAL = "ACME Co., Ltd."


def auth(client: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {CLIENT_KEYS[client]}"}


async def make_link(world: World, platform: str = "retail", **body: Any) -> httpx.Response:
    return await world.gateway.post(
        f"/v1/platforms/{platform}/authorization-links", json=body, headers=auth("onboarding")
    )


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def approve(
    world: World, link: dict[str, Any], appid: str, func_ids: list[int], **extra: Any
) -> dict[str, Any]:
    """The administrator approves on WeChat's page opened from ``link``."""
    query = query_of(link["pc_url"])
    body = {"authorizer_appid": appid, "func_ids": func_ids, "redirect_uri": query["redirect_uri"]}
    body |= {"kind": "official_account", "nick_name": "New Account", "principal_name": PRINCIPAL} | extra
    response = await world.sim.post(f"/sim/pre-auth-codes/{query['pre_auth_code']}/approve", json=body)
    assert response.status_code == 200, response.text
    approval: dict[str, Any] = response.json()
    return approval


async def land(world: World, redirect_url: str) -> httpx.Response:
    """The administrator's browser follows WeChat's redirect back to the gateway."""
    parts = urlsplit(redirect_url)
    return await world.gateway.get(f"{parts.path}?{parts.query}")


async def test_links_carry_a_fresh_pre_auth_code_encoded_as_wechat_expects(ready: World) -> None:
    first = await make_link(ready, auth_type=1, category_ids=[1, 15, 24])
    assert first.status_code == 200, first.text
    links = first.json()
    assert set(links) == {
        "invite_url",
        "invite_expires_at",
        "pc_url",
        "h5_url",
        "h5_url_legacy",
        "expires_at",
    }
    pc = urlsplit(links["pc_url"])
    assert (pc.scheme, pc.netloc, pc.path) == ("https", "mp.weixin.qq.com", "/cgi-bin/componentloginpage")
    query = query_of(links["pc_url"])
    assert query["component_appid"] == RETAIL["appid"]
    assert query["auth_type"] == "1"
    assert query["category_id_list"] == "1|15|24"
    assert query["redirect_uri"] == "http://127.0.0.1:8000/wechat/retail/authorized"
    assert "redirect_uri=http%3A%2F%2F127.0.0.1%3A8000%2Fwechat%2Fretail%2Fauthorized" in links["pc_url"]
    h5 = urlsplit(links["h5_url"])
    assert (h5.netloc, h5.path, h5.fragment) == (
        "open.weixin.qq.com",
        "/wxaopen/safe/bindcomponent",
        "wechat_redirect",
    )
    assert (
        query_of(links["h5_url"]).items()
        >= {"action": "bindcomponent", "no_scan": "1", "auth_type": "1"}.items()
    )
    legacy = urlsplit(links["h5_url_legacy"])
    assert (legacy.netloc, legacy.path) == ("mp.weixin.qq.com", "/safe/bindcomponent")
    second = (await make_link(ready)).json()
    assert query_of(second["pc_url"])["pre_auth_code"] != query["pre_auth_code"]
    assert await ready.calls("api_create_preauthcode") == 2
    assert 500 <= links["expires_at"] - ready.services.tokens._clock() <= 700
    await ready.services.audit.flush()
    actions = [r.action for r in await ready.services.store.audit.recent()]
    assert actions.count("authorization_link.created") == 2
    assert actions.count("invite.created") == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"auth_type": 7}, "auth_type"),
        ({"auth_type": 1, "category_ids": [17]}, "category_ids[0]"),
        ({"auth_type": 2, "category_ids": [25, 24]}, "category_ids[1]"),
        ({"redirect_uri": "https://evil.example/steal"}, "redirect_uri"),
        ({"biz_appid": "nope"}, "biz_appid"),
        ({"unknown": 1}, "unknown"),
    ],
)
async def test_bad_link_requests_are_422_naming_the_field(
    ready: World, body: dict[str, Any], field: str
) -> None:
    response = await make_link(ready, **body)
    assert response.status_code == 422, response.text
    assert field in response.json()["error"]["message"]
    assert await ready.calls("api_create_preauthcode") == 0


async def test_links_need_the_onboard_scope_and_a_ticket(world: World) -> None:
    refused = await world.gateway.post(
        "/v1/platforms/retail/authorization-links", json={}, headers=auth("crm")
    )
    assert refused.status_code == 403
    no_ticket = await make_link(world)
    assert (no_ticket.status_code, no_ticket.json()["error"]["code"]) == (503, "ticket_missing")


@pytest.mark.parametrize("order", ["redirect first", "event first"])
async def test_the_whole_loop_in_either_order(ready: World, order: str) -> None:
    link = (await make_link(ready)).json()
    approval = await approve(ready, link, NEW, [1, 2, 24])
    assert approval["push"]["delivered"]  # the authorized event reached the gateway
    if order == "event first":
        await ready.services.authorizations.process_pending()
    page = await land(ready, approval["redirect_url"])
    assert page.status_code == 200, page.text
    assert "New Account" in page.text and "official account" in page.text and "Retail" in page.text
    assert "24 open-platform account management" in page.text
    await ready.services.authorizations.process_pending()
    again = await land(ready, approval["redirect_url"])  # a reload of the page
    assert again.status_code == 200
    assert await ready.calls("api_query_auth") == 1  # exchanged once, whatever arrived first
    stored = await ready.services.store.authorizations.get("retail", NEW)
    assert stored is not None and stored.func_ids == {1, 2, 24} and stored.status == "active"
    profile = await ready.services.store.authorizations.profile(NEW)
    assert profile is not None and (profile.nick_name, profile.kind) == ("New Account", "official_account")

    token = await ready.gateway.get(f"/v1/authorizers/{NEW}/access-token", headers=auth("crm"))
    assert token.status_code == 200
    catalog = (await ready.gateway.get("/v1/catalog", params={"q": NEW}, headers=auth("audit"))).json()
    [row] = catalog["items"]
    assert (row["name"], row["kind"], row["status"]) == ("New Account", "official_account", "active")
    assert [(p["platform"], p["func_ids"]) for p in row["platforms"]] == [("retail", [1, 2, 24])]

    await ready.sim.post(
        "/sim/open-accounts",
        json={
            "open_appid": GROUP_OPEN,
            "principal_name": PRINCIPAL,
            "verified": True,
            "created_by_api": False,
        },
    )
    bind = await ready.gateway.post(f"/v1/authorizers/{NEW}/open-binding", headers=auth("onboarding"))
    assert bind.json() == {"state": "newly_bound", "open_appid": GROUP_OPEN}
    bind = await ready.gateway.post(f"/v1/authorizers/{NEW}/open-binding", headers=auth("onboarding"))
    assert bind.json() == {"state": "bound", "open_appid": GROUP_OPEN}

    await ready.sim.post(
        "/sim/authorizations/revoke", json={"component_appid": RETAIL["appid"], "authorizer_appid": NEW}
    )
    await ready.services.authorizations.process_pending()
    gone = await ready.gateway.get(f"/v1/authorizers/{NEW}/access-token", headers=auth("crm"))
    assert (gone.status_code, gone.json()["error"]["code"]) == (410, "authorization_revoked")
    revoked = await ready.services.store.authorizations.get("retail", NEW)
    assert revoked is not None and revoked.status == "revoked" and revoked.revoked_at is not None
    [row] = (await ready.gateway.get("/v1/catalog", params={"q": NEW}, headers=auth("audit"))).json()["items"]
    assert (row["status"], row["binding"]) == ("revoked", "bound")
    assert row["platforms"][0]["revoked_at"] is not None

    await ready.services.audit.flush()
    actions = {r.action for r in await ready.services.store.audit.recent(authorizer_appid=NEW)}
    assert {"authorization.granted", "binding.bound", "authorization.revoked", "token.issued"} <= actions


async def test_an_expired_or_used_code_stores_nothing_and_mints_no_link(ready: World) -> None:
    # The page is open to anyone: a link from it would skip the signed invite and its biz_appid.
    page = await ready.gateway.get(
        "/wechat/retail/authorized", params={"auth_code": "queryauthcode@@@bogus", "expires_in": "600"}
    )
    assert page.status_code == 410
    assert "nothing was recorded" in page.text
    assert "invite link" in page.text and "gateway onboarding invite" in page.text
    assert "componentloginpage" not in page.text and "bindcomponent" not in page.text
    assert "pre_auth_code" not in page.text
    assert await ready.calls("api_create_preauthcode") == 0
    assert await ready.services.store.authorizations.for_authorizer(NEW) == []
    missing = await ready.gateway.get("/wechat/retail/authorized")
    assert missing.status_code == 400


@pytest.mark.parametrize(
    "code", ["queryauthcode@@@has space", "x" * 513, "queryauthcode@@@caf\u00e9", "tab\there", "new\nline"]
)
async def test_a_malformed_code_is_refused_without_a_claim_or_a_call(ready: World, code: str) -> None:
    page = await ready.gateway.get("/wechat/retail/authorized", params={"auth_code": code})
    assert page.status_code == 400
    assert "nothing was recorded" in page.text and "invite link" in page.text
    assert await ready.services.store.authorizations.code_claim(code) is None
    assert await ready.calls("api_query_auth") == 0
    assert await ready.calls("api_create_preauthcode") == 0


async def test_an_event_with_a_malformed_code_is_settled_without_a_claim(ready: World) -> None:
    store = ready.services.store
    event = Authorized(RETAIL["appid"], 1, NEW, "has space", 600, "")
    assert await store.record_push("retail", "sig", "malformed", event)
    assert await ready.services.authorizations.process_pending() == 1
    assert await store.pending_authorization_events() == []  # settled, not deferred to be retried
    assert await store.authorizations.code_claim("has space") is None
    assert await ready.calls("api_query_auth") == 0


async def test_a_code_of_any_printable_shape_is_sent_to_wechat(ready: World) -> None:
    # WeChat's "queryauthcode@@@" prefix is not documented: a stand-in's code of another shape is sent.
    code = "A" * 512
    page = await ready.gateway.get("/wechat/retail/authorized", params={"auth_code": code})
    assert page.status_code == 410
    assert await ready.calls("api_query_auth") == 1
    claim = await ready.services.store.authorizations.code_claim(code)
    assert claim is not None and claim.state == "refused"


async def test_updateauthorized_changes_routing_at_once(ready: World) -> None:
    # OA holds 1, 2, 24 on retail; the administrator adds the custom menu (15).
    link = (await make_link(ready)).json()
    approval = await approve(ready, link, OA, [1, 2, 15, 24])
    assert approval["push"]["info_type"] == "updateauthorized"
    await ready.services.authorizations.process_pending()
    stored = await ready.services.store.authorizations.get("retail", OA)
    assert stored is not None and 15 in stored.func_ids
    assert await ready.services.authorizations.route(OA, "cgi-bin/menu/create") == "retail"


async def test_fast_registration_is_handled_like_an_authorization(ready: World) -> None:
    link = (await make_link(ready, platform="finance")).json()
    approval = await approve(ready, link, NEW, [17, 18], kind="mini_program")
    event = FastRegister(FINANCE["appid"], 1, NEW, 0, approval["auth_code"], "OK", {"name": "ACME"})
    outcome = await ready.services.authorizations.handle(RecordedEvent(0, "finance", 0.0, event))
    assert "registered and authorized" in outcome
    stored = await ready.services.store.authorizations.get("finance", NEW)
    assert stored is not None and stored.func_ids == {17, 18}


@pytest.mark.parametrize(
    ("open_account", "expected"),
    [
        (
            {
                "open_appid": "wxelsewhere000001",
                "principal_name": PRINCIPAL,
                "verified": True,
                "members": [OA],
            },
            ("bound_elsewhere", 200),
        ),
        (
            {"open_appid": GROUP_OPEN, "principal_name": "Another Group", "verified": True},
            ("principal_mismatch", 409),
        ),
        (
            {
                "open_appid": GROUP_OPEN,
                "principal_name": PRINCIPAL,
                "verified": False,
                "created_by_api": False,
            },
            ("open_account_not_api_created", 409),
        ),
        (
            {
                "open_appid": GROUP_OPEN,
                "principal_name": PRINCIPAL,
                "verified": False,
                "created_by_api": True,
                "members": ["wxm1", "wxm2", "wxm3", "wxm4", "wxm5"],
            },
            ("open_account_full", 409),
        ),
    ],
)
async def test_binding_refusals_are_explained(
    ready: World, open_account: dict[str, Any], expected: tuple[str, int]
) -> None:
    await ready.sim.post(
        "/sim/authorizers",
        json={
            "authorizer_appid": OA,
            "kind": "official_account",
            "nick_name": "OA",
            "principal_name": PRINCIPAL,
            "components": {},
        },
    )
    (await ready.sim.post("/sim/open-accounts", json=open_account)).raise_for_status()
    response = await ready.gateway.post(f"/v1/authorizers/{OA}/open-binding", headers=auth("onboarding"))
    state, status = expected
    assert response.status_code == status, response.text
    if status == 200:
        assert response.json() == {"state": "bound_elsewhere", "open_appid": open_account["open_appid"]}
    else:
        assert response.json()["error"]["code"] == state
        assert "WeChat refused" in response.json()["error"]["message"]


async def test_binding_needs_set_24_or_25(ready: World) -> None:
    await ready.authorize("finance", "wxe0000000000005", [1, 2])
    response = await ready.gateway.post(
        "/v1/authorizers/wxe0000000000005/open-binding", headers=auth("onboarding")
    )
    assert (response.status_code, response.json()["error"]["code"]) == (409, "permission_set_missing")
    assert "24" in response.json()["error"]["message"]


async def test_binding_needs_the_bind_scope(ready: World) -> None:
    response = await ready.gateway.post(f"/v1/authorizers/{OA}/open-binding", headers=auth("crm"))
    assert response.status_code == 403


async def test_ticket_for_finance_is_not_needed_to_bind_on_retail(ready: World) -> None:
    await push_ticket(ready.sim, FINANCE["appid"])
    await ready.sim.post(
        "/sim/open-accounts", json={"open_appid": GROUP_OPEN, "principal_name": PRINCIPAL, "verified": True}
    )
    await ready.sim.post(
        "/sim/authorizers",
        json={
            "authorizer_appid": OA,
            "kind": "official_account",
            "nick_name": "OA",
            "principal_name": PRINCIPAL,
            "components": {},
        },
    )
    response = await ready.gateway.post(f"/v1/authorizers/{OA}/open-binding", headers=auth("onboarding"))
    assert response.json()["state"] == "newly_bound"

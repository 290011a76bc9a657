"""Invites and the authorization start page (SPEC §4): a signed, long-lived invite; each load of the page
mints a fresh pre-auth code and links to WeChat's authorization page with the gateway's origin as Referer.

The signer on its own first; then the page and the links answer over the in-process world (SQLite and
PostgreSQL), the simulator's authorization page reached with the Referer a browser would send.
"""

from __future__ import annotations

import base64
import os
import re
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import msgspec
import pytest
import segno

from gateway.crypto import SecretBox
from gateway.onboarding.invites import (
    DEFAULT_INVITE_VALID_S,
    INVITE_KEY_PURPOSE,
    InviteRefused,
    InviteSigner,
)
from gateway.registry.model import Registry, WechatSettings
from tests.conftest import CLIENT_KEYS
from tests.support.flows import push_ticket
from tests.support.world import RETAIL, World, open_world

NEW = "wxd0000000000004"
PUBLIC = "http://127.0.0.1:8000"  # the test settings' GATEWAY_PUBLIC_URL


def auth(client: str = "onboarding") -> dict[str, str]:
    return {"Authorization": f"Bearer {CLIENT_KEYS[client]}"}


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def signer(box: SecretBox, *, at: float | None = None) -> InviteSigner:
    """A signer under the gateway's derived invite key, its clock at ``at`` (now by default)."""
    return InviteSigner(box.derive(INVITE_KEY_PURPOSE), clock=(lambda: at) if at is not None else time.time)


async def make_link(world: World, platform: str = "retail", **body: Any) -> httpx.Response:
    return await world.gateway.post(
        f"/v1/platforms/{platform}/authorization-links", json=body, headers=auth()
    )


async def open_invite(world: World, invite_url: str) -> httpx.Response:
    """The administrator's browser opens the invite (on the gateway's public URL)."""
    parts = urlsplit(invite_url)
    assert f"{parts.scheme}://{parts.netloc}" == PUBLIC
    return await world.gateway.get(f"{parts.path}?{parts.query}")


_HREF = re.compile(r'id="(pc|h5)-link" href="([^"]+)"')


def links_on(page: httpx.Response) -> dict[str, str]:
    """The PC and phone links the start page shows, unescaped."""
    found = {kind: href.replace("&amp;", "&") for kind, href in _HREF.findall(page.text)}
    assert set(found) == {"pc", "h5"}, page.text
    return found


# --- the signer ---------------------------------------------------------------------------------------


def test_an_invite_verifies_and_carries_what_it_was_made_with() -> None:
    box = SecretBox(os.urandom(32))
    made, token = signer(box).new(
        "retail", 1, 3600, biz_appid=NEW, category_ids=[1, 15], redirect_uri=f"{PUBLIC}/x"
    )
    assert signer(box).verify(token) == made
    assert (made.platform, made.auth_type, made.biz_appid, made.category_ids) == ("retail", 1, NEW, (1, 15))
    assert made.redirect_uri == f"{PUBLIC}/x"
    assert 3590 <= made.expires_at - time.time() <= 3600
    payload = base64.urlsafe_b64decode(token.split(".")[0] + "==")
    assert b"pre_auth_code" not in payload and b"preauthcode" not in payload


def test_a_changed_invite_is_refused() -> None:
    box = SecretBox(os.urandom(32))
    made, token = signer(box).new("retail", 3, 3600)
    payload, mac = token.split(".")
    # Another platform, or a longer life, in a payload re-encoded by someone without the key.
    for forged in (
        msgspec.structs.replace(made, platform="finance"),
        msgspec.structs.replace(made, expires_at=made.expires_at + 86400 * 365),
    ):
        body = base64.urlsafe_b64encode(msgspec.json.encode(forged)).rstrip(b"=").decode()
        with pytest.raises(InviteRefused) as refused:
            signer(box).verify(f"{body}.{mac}")
        assert refused.value.reason == "tampered"
    flipped = mac[:-2] + ("A" if mac[-2] != "A" else "B") + mac[-1]
    with pytest.raises(InviteRefused) as refused:
        signer(box).verify(f"{payload}.{flipped}")
    assert refused.value.reason == "tampered"
    for broken in ("", "no-dot", f"{payload}", f"{payload}.{mac}.x", "é.é", "x" * 5000):
        with pytest.raises(InviteRefused) as refused:
            signer(box).verify(broken)
        assert refused.value.reason == "malformed", broken


def test_an_invite_of_another_key_is_refused_and_a_previous_key_still_opens() -> None:
    old, new = os.urandom(32), os.urandom(32)
    _, token = signer(SecretBox(old)).new("retail", 3, 3600)
    with pytest.raises(InviteRefused) as refused:
        signer(SecretBox(new)).verify(token)
    assert refused.value.reason == "tampered"
    # After a key rotation the old key is listed as previous: invites made before it still open.
    assert signer(SecretBox(new, previous=[old])).verify(token).platform == "retail"
    # The invite key is derived, never the sealing key itself.
    assert SecretBox(old).derive(INVITE_KEY_PURPOSE)[0] != old
    assert SecretBox(old).derive(INVITE_KEY_PURPOSE) != SecretBox(old).derive("something else")


def test_an_expired_invite_is_refused() -> None:
    box = SecretBox(os.urandom(32))
    made, token = signer(box, at=1_000_000).new("retail", 3, 60)
    assert signer(box, at=1_000_059).verify(token) == made
    with pytest.raises(InviteRefused) as refused:
        signer(box, at=1_000_060).verify(token)
    assert refused.value.reason == "expired"
    assert "expired on 1970-01-12" in refused.value.message


# --- the links answer ----------------------------------------------------------------------------------


async def test_the_links_answer_carries_an_invite(ready: World) -> None:
    response = await make_link(ready, auth_type=2, biz_appid=NEW, category_ids=[17, 18])
    assert response.status_code == 200, response.text
    links = response.json()
    assert list(links)[:2] == ["invite_url", "invite_expires_at"]
    invite_url = urlsplit(links["invite_url"])
    assert (invite_url.scheme, invite_url.netloc, invite_url.path) == (
        "http",
        "127.0.0.1:8000",
        "/wechat/retail/authorize",
    )
    token = query_of(links["invite_url"])["invite"]
    assert query_of(links["pc_url"])["pre_auth_code"] not in token
    assert abs(links["invite_expires_at"] - (time.time() + DEFAULT_INVITE_VALID_S)) <= 5
    longer = (await make_link(ready, invite_valid_s=30 * 86400)).json()
    assert abs(longer["invite_expires_at"] - (time.time() + 30 * 86400)) <= 5

    # The invite opens the page with what the request asked for.
    page = await open_invite(ready, links["invite_url"])
    assert page.status_code == 200, page.text
    pc = query_of(links_on(page)["pc"])
    assert (pc["auth_type"], pc["biz_appid"], pc["category_id_list"]) == ("2", NEW, "17|18")


@pytest.mark.parametrize("valid_s", [0, 59, 30 * 86400 + 1, -1, "7d"])
async def test_a_bad_invite_validity_is_422_naming_the_field(ready: World, valid_s: object) -> None:
    response = await make_link(ready, invite_valid_s=valid_s)
    assert response.status_code == 422, response.text
    assert "invite_valid_s" in response.json()["error"]["message"]
    assert await ready.calls("api_create_preauthcode") == 0
    await ready.services.audit.flush()
    assert not [r for r in await ready.services.store.audit.recent() if r.action == "invite.created"]


# --- the start page ------------------------------------------------------------------------------------


async def test_each_load_of_the_start_page_mints_a_fresh_code(ready: World) -> None:
    invite_url = (await make_link(ready)).json()["invite_url"]
    await ready.reset_counters()
    first, second = await open_invite(ready, invite_url), await open_invite(ready, invite_url)
    assert first.status_code == second.status_code == 200
    codes = [query_of(links_on(page)["pc"])["pre_auth_code"] for page in (first, second)]
    assert codes[0] != codes[1]
    assert await ready.calls("api_create_preauthcode") == 2

    await ready.services.audit.flush()
    records = await ready.services.store.audit.recent()
    opened = [r for r in records if r.action == "invite.opened"]
    assert len(opened) == 2 and all(r.platform_id == "retail" for r in opened)
    created = [r for r in records if r.action == "invite.created"]
    assert len(created) == 1
    invite_id = (created[0].detail or "").split(",")[0].removeprefix("invite ")
    assert all(invite_id in (r.detail or "") for r in opened)
    text = " ".join(str(msgspec.structs.asdict(r)) for r in records)
    assert not any(code in text for code in codes)  # no pre-auth code in the audit log
    assert query_of(invite_url)["invite"] not in text


async def test_the_start_page_links_as_wechat_expects_and_keeps_its_origin(ready: World) -> None:
    invite_url = (await make_link(ready, auth_type=1)).json()["invite_url"]
    page = await open_invite(ready, invite_url)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["referrer-policy"] in ("origin", "strict-origin-when-cross-origin")
    assert page.headers["cache-control"] == "no-store"
    csp = page.headers["content-security-policy"]
    assert "style-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "<script" not in page.text and "noreferrer" not in page.text and "referrerpolicy" not in page.text
    assert '<link rel="stylesheet" href="/static/catalog.css">' in page.text

    links = links_on(page)
    pc, h5 = urlsplit(links["pc"]), urlsplit(links["h5"])
    assert (pc.scheme, pc.netloc, pc.path) == ("https", "mp.weixin.qq.com", "/cgi-bin/componentloginpage")
    assert (h5.netloc, h5.path, h5.fragment) == (
        "open.weixin.qq.com",
        "/wxaopen/safe/bindcomponent",
        "wechat_redirect",
    )
    assert "redirect_uri=http%3A%2F%2F127.0.0.1%3A8000%2Fwechat%2Fretail%2Fauthorized" in links["pc"]
    assert query_of(links["pc"])["component_appid"] == RETAIL["appid"]
    assert (
        query_of(links["h5"]).items() >= {"action": "bindcomponent", "no_scan": "1", "auth_type": "1"}.items()
    )

    # The QR code opens this start page on the phone (a scanned link has no Referer, so it must not be
    # WeChat's page): the same SVG segno makes of the invite URL, and never of the phone link.
    def qr_of(url: str) -> str:
        return segno.make(url, error="m").svg_inline(
            scale=4, border=4, light="#fff", title="QR code of this page, to open it on a phone"
        )

    assert qr_of(invite_url) in page.text
    assert qr_of(links["h5"]) not in page.text


async def test_the_phone_links_follow_the_authorization_page_base(
    registry: Registry, database_url: str, secret_box: SecretBox
) -> None:
    moved = msgspec.structs.replace(
        registry,
        wechat=WechatSettings(
            api_base=registry.wechat.api_base, authorization_page_base="http://sim.test:8001"
        ),
    )
    async with open_world(moved, database_url, secret_box) as world:
        await push_ticket(world.sim, RETAIL["appid"])
        links = (await make_link(world)).json()
        assert links["pc_url"].startswith("http://sim.test:8001/cgi-bin/componentloginpage?")
        assert links["h5_url"].startswith("http://sim.test:8001/wxaopen/safe/bindcomponent?")
        assert links["h5_url_legacy"].startswith("http://sim.test:8001/safe/bindcomponent?")
        page = await open_invite(world, links["invite_url"])
        assert links_on(page)["pc"].startswith("http://sim.test:8001/cgi-bin/componentloginpage?")


async def test_the_whole_way_from_the_invite_to_the_authorized_page(ready: World) -> None:
    invite_url = (await make_link(ready)).json()["invite_url"]
    page = await open_invite(ready, invite_url)
    pc = urlsplit(links_on(page)["pc"])
    # The browser follows the link from the start page: its Referer is the gateway's origin.
    referer = {"Referer": f"{PUBLIC}/"}
    refused = await ready.sim.get(f"{pc.path}?{pc.query}")
    assert refused.status_code == 403 and "授权入口页所在域名：空" in refused.text
    wechat = await ready.sim.get(f"{pc.path}?{pc.query}", headers=referer)
    assert wechat.status_code == 200, wechat.text
    form = {
        "pre_auth_code": query_of(links_on(page)["pc"])["pre_auth_code"],
        "redirect_uri": query_of(links_on(page)["pc"])["redirect_uri"],
        "authorizer_appid": NEW,
        "func_id": ["1", "2"],
    }
    await ready.sim.post(
        "/sim/authorizers",
        json={
            "authorizer_appid": NEW,
            "kind": "official_account",
            "nick_name": "New Account",
            "principal_name": "ACME Co., Ltd.",
            "components": {},
        },
    )
    approved = await ready.sim.post(pc.path, data=form, follow_redirects=False)
    assert approved.status_code == 303, approved.text
    back = urlsplit(approved.headers["location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == f"{PUBLIC}/wechat/retail/authorized"
    landed = await ready.gateway.get(f"{back.path}?{back.query}")
    assert landed.status_code == 200, landed.text
    assert "New Account" in landed.text and "is now authorized to" in landed.text
    stored = await ready.services.store.authorizations.get("retail", NEW)
    assert stored is not None and stored.func_ids == {1, 2}


async def test_an_expired_invite_gets_a_page_that_says_so(ready: World, secret_box: SecretBox) -> None:
    _, token = signer(secret_box, at=time.time() - 8 * 86400).new("retail", 3, 7 * 86400)
    page = await ready.gateway.get("/wechat/retail/authorize", params={"invite": token})
    assert page.status_code == 410
    assert "This invite link expired on" in page.text
    assert "Ask the administrator who sent it for a new invite" in page.text
    assert "gateway onboarding invite" in page.text
    assert "componentloginpage" not in page.text
    assert await ready.calls("api_create_preauthcode") == 0


@pytest.mark.parametrize("how", ["changed", "another key", "missing", "garbage"])
async def test_a_tampered_invite_gets_a_page_that_says_so(
    ready: World, secret_box: SecretBox, how: str
) -> None:
    _, token = signer(secret_box).new("retail", 3, 3600)
    payload, mac = token.split(".")
    params = {
        "changed": {"invite": f"{payload}.{mac[::-1]}"},
        "another key": {"invite": signer(SecretBox(os.urandom(32))).new("retail", 3, 3600)[1]},
        "missing": {},
        "garbage": {"invite": "<script>alert(1)</script>"},
    }[how]
    page = await ready.gateway.get("/wechat/retail/authorize", params=params)
    assert page.status_code == 400
    assert "not valid" in page.text or "not a complete invite" in page.text
    assert "new invite" in page.text
    assert "<script>" not in page.text
    assert page.headers["referrer-policy"] == "strict-origin-when-cross-origin"
    assert await ready.calls("api_create_preauthcode") == 0


async def test_an_invite_for_an_unknown_platform_gets_a_page_that_says_so(
    ready: World, secret_box: SecretBox
) -> None:
    _, gone = signer(secret_box).new("closed", 3, 3600)
    page = await ready.gateway.get("/wechat/closed/authorize", params={"invite": gone})
    assert page.status_code == 404
    assert "does not serve (&#39;closed&#39;)" in page.text and "new invite" in page.text
    _, finance = signer(secret_box).new("finance", 3, 3600)
    elsewhere = await ready.gateway.get("/wechat/retail/authorize", params={"invite": finance})
    assert elsewhere.status_code == 404
    assert await ready.calls("api_create_preauthcode") == 0


async def test_before_a_ticket_the_page_says_the_platform_is_not_ready(
    world: World, secret_box: SecretBox
) -> None:
    links = await make_link(world)
    assert links.status_code == 503  # the links answer needs a ticket too (SPEC §4)
    _, token = signer(secret_box).new("retail", 3, 3600)
    page = await world.gateway.get("/wechat/retail/authorize", params={"invite": token})
    assert page.status_code == 503
    assert "not ready to take authorizations yet" in page.text
    assert "verify ticket" in page.text
    assert "componentloginpage" not in page.text
    await push_ticket(world.sim, RETAIL["appid"])
    assert (await world.gateway.get("/wechat/retail/authorize", params={"invite": token})).status_code == 200

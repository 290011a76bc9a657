"""The auditors' pages (`/catalog`): sign-in with sessions and CSRF tokens, the table, its filters, the CSV,
one account, the audit log, sign-out.

First the HTTP behaviour with httpx over the in-process ``stocked`` world (SQLite and PostgreSQL); then
the whole journey in a real browser: Debian's chromium driven by Playwright, against the gateway and the
simulator on loopback sockets. Never a browser download: without /usr/bin/chromium the browser test fails.
Its screenshots go to ``tests/artifacts/``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import msgspec
import pytest
from playwright.sync_api import ConsoleMessage, Page, sync_playwright
from sqlalchemy import text

from gateway.http.app import create_app
from gateway.http.sessions import CSRF_COOKIE, SESSION_COOKIE, SessionStore
from gateway.registry.model import Registry
from tests.conftest import CLIENT_KEYS, PLATFORM_SECRETS, make_settings
from tests.support.asgi import running
from tests.support.flows import approve_over_sockets
from tests.support.sockets import Served, served
from tests.support.world import FINANCE, MINI, OA, OTHER, World

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).parent / "artifacts"

_CSRF = re.compile(r'name="_csrf_token" value="([^"]+)"')
_APPID_CELL = re.compile(r'<td class="appid"><a href="/catalog/[^"]+">([^<]+)</a>')


def csrf_token(html: str) -> str:
    """The CSRF token of the first form of a page."""
    match = _CSRF.search(html)
    assert match, "no form with a CSRF token on the page"
    return match.group(1)


async def sessions_stored(world: World) -> int:
    async with world.services.store.engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM web_sessions"))).scalar_one())


def appids(html: str) -> set[str]:
    """The appids the catalog table shows."""
    return set(_APPID_CELL.findall(html))


async def sign_in(
    client: httpx.AsyncClient, client_id: str = "audit", key: str | None = None
) -> httpx.Response:
    """Load the sign-in form and post it with a key."""
    form = await client.get("/catalog/login")
    assert form.status_code == 200
    data = {"key": CLIENT_KEYS[client_id] if key is None else key, "_csrf_token": csrf_token(form.text)}
    return await client.post("/catalog/login", data=data)


@pytest.fixture
async def signed_in(stocked: World) -> World:
    """The stocked world with the auditor signed in on ``world.gateway``."""
    response = await sign_in(stocked.gateway)
    assert (response.status_code, response.headers["location"]) == (303, "/catalog"), response.text
    return stocked


# --- over HTTP ------------------------------------------------------------------------------------------


async def test_nothing_shows_before_sign_in(stocked: World) -> None:
    for path in (
        "/catalog",
        "/catalog?platform=retail",
        "/catalog/export.csv",
        "/catalog/audit",
        f"/catalog/{OA}",
    ):
        response = await stocked.gateway.get(path)
        assert (response.status_code, response.headers["location"]) == (303, "/catalog/login"), path
        assert OA not in response.text
    stocked.gateway.cookies.clear()
    form = await stocked.gateway.get("/catalog/login")
    assert form.status_code == 200
    assert 'name="key"' in form.text
    assert OA not in form.text
    assert "default-src 'self'" in form.headers["content-security-policy"]
    assert "<script" not in form.text
    # The form's CSRF cookie, and no session: a visitor who does not sign in leaves no row.
    (csrf_cookie,) = form.headers.get_list("set-cookie")
    assert csrf_cookie.startswith(f"{CSRF_COOKIE}=")
    for flag in ("httponly", "samesite=strict", "path=/catalog"):
        assert flag in csrf_cookie.lower()
    assert "secure" not in csrf_cookie.lower()  # the public URL of the tests is http
    assert await sessions_stored(stocked) == 0


@pytest.mark.parametrize(
    ("client_id", "key", "said"),
    [
        ("audit", "audit-test-kez", "This key was not accepted"),
        ("audit", " ", "This key was not accepted"),
        ("crm", None, "does not open the catalog: it lacks the scope"),
    ],
)
async def test_a_wrong_or_out_of_scope_key_is_refused_visibly(
    stocked: World, client_id: str, key: str | None, said: str
) -> None:
    response = await sign_in(stocked.gateway, client_id, key)
    assert response.status_code == 200  # the form again, with the refusal in words
    assert said in response.text
    assert 'name="key"' in response.text
    assert SESSION_COOKIE not in response.cookies
    assert (await stocked.gateway.get("/catalog")).status_code == 303


async def test_sign_in_needs_the_token_of_its_own_form(stocked: World) -> None:
    gateway = stocked.gateway
    key = CLIENT_KEYS["audit"]
    token = csrf_token((await gateway.get("/catalog/login")).text)
    forged = await gateway.post("/catalog/login", data={"key": key, "_csrf_token": "x" + token[1:]})
    assert forged.status_code == 403
    assert "expired" in forged.text
    gateway.cookies.clear()  # a cross-site post carries no SameSite=Strict cookie
    without_cookie = await gateway.post("/catalog/login", data={"key": key, "_csrf_token": token})
    assert without_cookie.status_code == 403
    assert (await gateway.get("/catalog")).status_code == 303


async def test_the_catalog_shows_rows_counts_and_filters(signed_in: World) -> None:
    gateway = signed_in.gateway
    page = await gateway.get("/catalog")
    assert page.status_code == 200
    assert appids(page.text) == {OA, MINI, OTHER}
    assert page.headers["cache-control"] == "no-store"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert re.search(r">unknown</a></dt><dd>3</dd>", page.text)  # by binding: nobody asked yet
    assert re.search(r">Retail</a></dt><dd>2</dd>", page.text)  # by component: OA and MINI
    assert re.search(r">Finance</a></dt><dd>2</dd>", page.text)  # OA and OTHER (revoked)
    for params, expected in [
        ({"q": "shop"}, {MINI}),
        ({"q": "GONE"}, {OTHER}),
        ({"platform": "finance"}, {OA, OTHER}),
        ({"kind": "mini_program"}, {MINI}),
        ({"status": "revoked"}, {OTHER}),
        ({"binding": "unknown", "platform": "retail"}, {OA, MINI}),
        ({"binding": "bound"}, set()),
        ({"q": "", "platform": "", "kind": "", "status": "", "binding": ""}, {OA, MINI, OTHER}),
    ]:
        filtered = await gateway.get("/catalog", params=params)
        assert filtered.status_code == 200
        assert appids(filtered.text) == expected, params
    counted = await gateway.get("/catalog", params={"platform": "finance"})
    assert re.search(r">Retail</a></dt><dd>1</dd>", counted.text)  # counts follow the filter


async def test_console_binding_needed_is_counted_filtered_exported_and_explained(signed_in: World) -> None:
    # OA is on the group's open account, so the group's principal is OA's (SPEC §11); MINI belongs to
    # another principal ("Shop Co"): only the Open Platform console can bind it, to the group's.
    group_open = "wx0pen0000000001"
    seeded = {"open_appid": group_open, "principal_name": "ACME Co., Ltd.", "verified": True, "members": [OA]}
    (await signed_in.sim.post("/sim/open-accounts", json=seeded)).raise_for_status()
    await signed_in.services.catalog_sync.run()
    gateway = signed_in.gateway

    page = await gateway.get("/catalog")
    assert re.search(r">console binding needed</a></dt><dd>1</dd>", page.text)
    assert re.search(r">bound</a></dt><dd>1</dd>", page.text)
    assert "What the binding states mean" in page.text
    assert '<option value="console_binding_needed">console binding needed</option>' in page.text
    for words in ("Open Platform console", "never unbinds", "gateway open-binding ensure"):
        assert words in page.text, words
    filtered = await gateway.get("/catalog", params={"binding": "console_binding_needed"})
    assert appids(filtered.text) == {MINI}
    assert f'console binding needed: to <span class="appid">{group_open}</span>' in filtered.text

    exported = await gateway.get("/catalog/export.csv", params={"binding": "console_binding_needed"})
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(r["authorizer_appid"], r["binding"], r["binding_target"]) for r in rows] == [
        (MINI, "console_binding_needed", group_open)
    ]
    account = await gateway.get(f"/catalog/{MINI}")
    assert f'its target is <span class="appid">{group_open}</span>' in account.text
    assert "another principal" in account.text


async def test_pages_follow_the_cursor(signed_in: World) -> None:
    seen: list[str] = []
    path = "/catalog?limit=1"
    while path:
        page = await signed_in.gateway.get(path)
        seen += sorted(appids(page.text))
        following = re.search(r'<a rel="next" href="([^"]+)"', page.text)
        path = following.group(1).replace("&amp;", "&") if following else ""
    assert seen == sorted([OA, MINI, OTHER])


@pytest.mark.parametrize(
    ("params", "status", "named", "paths"),
    [
        ({"kind": "robot"}, 422, "kind: must be one of", ("/catalog", "/catalog/export.csv")),
        ({"status": "gone"}, 422, "status:", ("/catalog", "/catalog/export.csv")),
        ({"binding": "maybe"}, 422, "binding:", ("/catalog", "/catalog/export.csv")),
        ({"platform": "nope"}, 422, "platform:", ("/catalog", "/catalog/export.csv")),
        ({"cursor": "!!!"}, 400, "cursor:", ("/catalog",)),  # the CSV has every page: no cursor
    ],
)
async def test_bad_filters_are_shown_on_a_page(
    signed_in: World, params: dict[str, str], status: int, named: str, paths: tuple[str, ...]
) -> None:
    for path in paths:
        response = await signed_in.gateway.get(path, params=params)
        assert response.status_code == status
        assert response.headers["content-type"].startswith("text/html")
        assert named in response.text
        assert 'href="/catalog"' in response.text


async def test_csv_of_the_current_filter_with_the_session(signed_in: World) -> None:
    page = await signed_in.gateway.get("/catalog", params={"platform": "finance", "q": "o"})
    link = re.search(r'<a id="csv" href="([^"]+)"', page.text)
    assert link
    response = await signed_in.gateway.get(link.group(1).replace("&amp;", "&"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert {row["authorizer_appid"] for row in rows} == appids(page.text) == {OA, OTHER}
    api = await signed_in.gateway.get(
        "/v1/catalog.csv",
        params={"platform": "finance", "q": "o"},
        headers={"Authorization": f"Bearer {CLIENT_KEYS['audit']}"},
    )
    assert response.text == api.text


async def test_one_account_and_the_audit_log(signed_in: World) -> None:
    headers = {"Authorization": f"Bearer {CLIENT_KEYS['crm']}"}
    assert (
        await signed_in.gateway.get(f"/v1/authorizers/{OA}/access-token", headers=headers)
    ).status_code == 200
    await signed_in.services.audit.flush()
    detail = await signed_in.gateway.get(f"/catalog/{OA}")
    assert detail.status_code == 200
    assert f'id="appid">{OA}<' in detail.text
    assert "Finance" in detail.text
    assert "Retail" in detail.text
    assert "24 · " in detail.text  # a permission set with its name
    assert "token.issued" in detail.text
    assert "access_token" not in detail.text
    assert (await signed_in.gateway.get("/catalog/wxnobody00000000")).status_code == 404
    log = await signed_in.gateway.get("/catalog/audit", params={"authorizer_appid": OA, "limit": 1})
    assert log.status_code == 200
    assert "token.issued" in log.text
    older = re.search(r'<a rel="next" href="([^"]+)"', log.text)
    assert older
    assert "limit=1" in older.group(1)  # the next page keeps the filters
    assert (await signed_in.gateway.get("/catalog/audit", params={"cursor": "x"})).status_code == 400
    # A NUL failed the query on PostgreSQL (a 503 page) and matched every row on SQLite.
    for path, name in (("/catalog/audit", "actor"), ("/catalog", "q")):
        refused = await signed_in.gateway.get(path, params={name: "\x00"})
        assert refused.status_code == 422
        assert f"{name}: must not contain control characters" in refused.text


async def test_sign_out_needs_the_session_token_and_ends_the_session(signed_in: World) -> None:
    gateway = signed_in.gateway
    page = await gateway.get("/catalog")
    cookie = gateway.cookies[SESSION_COOKIE]
    forged = await gateway.post("/catalog/logout", data={"_csrf_token": "0" * 128})
    assert forged.status_code == 403
    assert (await gateway.get("/catalog")).status_code == 200  # a forged sign-out ends nothing
    signed_out = await gateway.post("/catalog/logout", data={"_csrf_token": csrf_token(page.text)})
    assert (signed_out.status_code, signed_out.headers["location"]) == (303, "/catalog/login?signed_out")
    gateway.cookies.clear()
    for path in ("/catalog", "/catalog/export.csv", f"/catalog/{OA}"):
        replayed = await gateway.get(path, headers={"Cookie": f"{SESSION_COOKIE}={cookie}"})
        assert (replayed.status_code, replayed.headers["location"]) == (303, "/catalog/login")


async def test_a_session_ends_when_it_expires(signed_in: World) -> None:
    assert (await signed_in.gateway.get("/catalog")).status_code == 200
    async with signed_in.services.store.engine.begin() as conn:
        await conn.execute(text("UPDATE web_sessions SET expires_at = 1"))
    assert (await signed_in.gateway.get("/catalog")).status_code == 303
    async with signed_in.services.store.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM web_sessions"))).scalar_one() == 0


async def test_a_session_ends_when_its_client_loses_the_scope(signed_in: World, registry: Registry) -> None:
    gateway, live = signed_in.gateway, signed_in.services.registry
    assert (await gateway.get("/catalog")).status_code == 200
    clients = tuple(
        msgspec.structs.replace(c, scopes=("token",)) if c.id == "audit" else c for c in registry.clients
    )
    live.swap(msgspec.structs.replace(registry, clients=clients))  # a reload narrows the client
    assert (await gateway.get("/catalog")).status_code == 303
    assert await sessions_stored(signed_in) == 0
    live.swap(registry)
    assert (await gateway.get("/catalog")).status_code == 303  # the session ended for good
    assert (await sign_in(gateway)).status_code == 303
    live.swap(msgspec.structs.replace(registry, clients=tuple(c for c in clients if c.id != "audit")))
    assert (await gateway.get("/catalog")).status_code == 303
    assert await sessions_stored(signed_in) == 0


async def test_cookies_are_secure_behind_https(registry: Registry, sqlite_url: str) -> None:
    settings = make_settings(sqlite_url)
    settings = msgspec.structs.replace(settings, public_url="https://gateway.example")
    app = create_app(settings, registry, background=False)
    async with running(app, base_url="https://gateway.example") as gateway:
        form = await gateway.get("/catalog/login")
        assert "secure" in form.headers["set-cookie"].lower()
        signed = await gateway.post(
            "/catalog/login", data={"key": CLIENT_KEYS["audit"], "_csrf_token": csrf_token(form.text)}
        )
        session_cookie = next(
            c for c in signed.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE)
        )
        assert all(
            flag in session_cookie.lower() for flag in ("secure", "httponly", "samesite=lax", "path=/catalog")
        )


async def test_a_form_posted_without_its_csrf_token_is_refused(signed_in: World) -> None:
    gateway = signed_in.gateway
    page = await gateway.get("/catalog")
    token = csrf_token(page.text)
    for path, data in (
        ("/catalog/logout", {}),
        ("/catalog/logout", {"_csrf_token": ""}),
        ("/catalog/login", {"key": CLIENT_KEYS["audit"]}),
    ):
        refused = await gateway.post(path, data=data)
        assert refused.status_code == 403, path
        assert refused.headers["content-type"].startswith("text/html")
        assert "The form has expired" in refused.text
    # The token of another browser's cookie does not match this one's.
    other = httpx.AsyncClient(transport=gateway._transport, base_url=str(gateway.base_url))
    async with other:
        foreign = csrf_token((await other.get("/catalog/login")).text)
    assert foreign != token
    assert (await gateway.post("/catalog/logout", data={"_csrf_token": foreign})).status_code == 403
    assert (await gateway.get("/catalog")).status_code == 200  # none of it ended the session
    assert (await gateway.post("/catalog/logout", data={"_csrf_token": token})).status_code == 303


async def test_the_api_takes_no_session_and_no_csrf_token(signed_in: World) -> None:
    # A signed-in browser's cookies open nothing on /v1, and a POST there needs no form token.
    cookies = {name: value for name, value in signed_in.gateway.cookies.items()}
    assert (await signed_in.gateway.get("/v1/catalog")).status_code == 401
    posted = await signed_in.gateway.post(
        "/v1/platforms/retail/authorization-links",
        json={"auth_type": 3},
        headers={"Authorization": f"Bearer {CLIENT_KEYS['onboarding']}"},
    )
    assert posted.status_code == 200, posted.text
    assert "set-cookie" not in posted.headers
    assert cookies  # the browser did hold a session and a CSRF cookie meanwhile


async def test_a_sign_in_gets_a_fresh_session_id_and_only_its_digest_is_stored(stocked: World) -> None:
    gateway = stocked.gateway
    planted = "a" * 64  # an id set in the browser by someone else, hoping it becomes the session
    gateway.cookies.set(SESSION_COOKIE, planted, domain="app.test", path="/catalog")
    assert (await sign_in(gateway)).status_code == 303
    session_id = gateway.cookies[SESSION_COOKIE]
    assert session_id != planted
    fresh = httpx.AsyncClient(transport=gateway._transport, base_url=str(gateway.base_url))
    async with fresh:
        replayed = await fresh.get("/catalog", headers={"Cookie": f"{SESSION_COOKIE}={planted}"})
    assert (replayed.status_code, replayed.headers["location"]) == (303, "/catalog/login")
    async with stocked.services.store.engine.connect() as conn:
        stored = (await conn.execute(text("SELECT token_sha256, data FROM web_sessions"))).all()
    assert [row[0] for row in stored] == [hashlib.sha256(session_id.encode()).hexdigest()]
    assert session_id.encode() not in stored[0][1]
    assert msgspec.json.decode(stored[0][1])["client_id"] == "audit"


async def test_pages_answer_without_writing_the_session_again(signed_in: World) -> None:
    # The session is written when it opens and when it ends, not at every page.
    before = await _session_rows(signed_in)
    for path in ("/catalog", "/catalog/audit", f"/catalog/{OA}"):
        response = await signed_in.gateway.get(path)
        assert response.status_code == 200
        assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
    assert await _session_rows(signed_in) == before


async def _session_rows(world: World) -> list[tuple[str, float]]:
    async with world.services.store.engine.connect() as conn:
        rows = await conn.execute(text("SELECT token_sha256, expires_at FROM web_sessions"))
        return [(row[0], row[1]) for row in rows]


async def test_the_session_store_keeps_litestars_contract(world: World) -> None:
    store = SessionStore(world.services.store.web_sessions)
    await store.set("id-1", "{}", expires_in=60)
    await store.set("id-2", b"two", expires_in=timedelta(seconds=1))
    assert (await store.get("id-1"), await store.exists("id-1")) == (b"{}", True)
    assert 0 < (await store.expires_in("id-1") or 0) <= 60
    await store.set("id-1", b"again")  # replaced, and no end any more
    assert (await store.get("id-1"), await store.expires_in("id-1")) == (b"again", None)
    async with world.services.store.engine.begin() as conn:
        await conn.execute(text("UPDATE web_sessions SET expires_at = 1 WHERE expires_at < 1e15"))
    assert (await store.get("id-2"), await store.exists("id-2")) == (None, False)  # ended: gone
    await store.delete("id-1")
    assert await store.get("id-1") is None
    await store.set("id-3", b"three", expires_in=60)
    await store.delete_all()
    assert await sessions_stored(world) == 0


async def test_a_session_is_known_to_every_replica(registry: Registry, database_url: str) -> None:
    # Two instances on one database, with one secret key, as replicas behind a load balancer.
    settings = make_settings(database_url)
    first = create_app(settings, registry, background=False)
    second = create_app(settings, registry, background=False)
    async with running(first) as one, running(second) as other:
        assert (await sign_in(one)).status_code == 303
        cookies = "; ".join(f"{name}={value}" for name, value in one.cookies.items())
        page = await other.get("/catalog", headers={"Cookie": cookies})
        assert page.status_code == 200, page.text
        assert "Catalog" in page.text
        signed_out = await other.post(
            "/catalog/logout", data={"_csrf_token": csrf_token(page.text)}, headers={"Cookie": cookies}
        )
        assert signed_out.status_code == 303
        assert (await one.get("/catalog")).status_code == 303  # ended on the other replica, ended here


# --- in a real browser ----------------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Served]:
    """The gateway and the simulator on loopback sockets; the stocked catalog, and one token handed out."""
    with served(tmp_path) as both:
        _stock(both.simulator, both.gateway)
        yield both


def _stock(sim: str, gateway: str) -> None:
    for platform, appid, sets, profile in [
        ("retail", OA, [1, 2, 24], {"nick_name": "Tea House", "principal_name": "ACME Co., Ltd."}),
        ("finance", OA, [15], {"nick_name": "Tea House", "principal_name": "ACME Co., Ltd."}),
        (
            "retail",
            MINI,
            [17, 18, 25],
            {"nick_name": "Shop", "principal_name": "Shop Co", "kind": "mini_program"},
        ),
        ("finance", OTHER, [1], {"nick_name": "Old = Account", "principal_name": "Gone Ltd"}),
    ]:
        values = PLATFORM_SECRETS[platform]
        approve_over_sockets(sim, values["appid"], values["secret"], appid, sets, **profile)
    _wait_for(gateway, {OA: "active", MINI: "active", OTHER: "active"})
    revoke = {"component_appid": FINANCE["appid"], "authorizer_appid": OTHER}
    httpx.post(f"{sim}/sim/authorizations/revoke", json=revoke).raise_for_status()
    _wait_for(gateway, {OA: "active", MINI: "active", OTHER: "revoked"})
    crm = {"Authorization": f"Bearer {CLIENT_KEYS['crm']}"}
    httpx.get(f"{gateway}/v1/authorizers/{OA}/access-token", headers=crm).raise_for_status()


def _wait_for(gateway: str, statuses: dict[str, str]) -> None:
    """Until the catalog shows these accounts in these states (the gateway acts on pushes by itself)."""
    headers = {"Authorization": f"Bearer {CLIENT_KEYS['audit']}"}
    seen: dict[str, str] = {}
    for _ in range(500):
        items = httpx.get(f"{gateway}/v1/catalog", headers=headers).json()["items"]
        seen = {row["authorizer_appid"]: row["status"] for row in items}
        if seen == statuses and all(len(row["platforms"]) for row in items):
            return
        time.sleep(0.02)
    raise AssertionError(f"the catalog never showed {statuses}; it showed {seen}")


def _shown(page: Page) -> set[str]:
    return set(page.locator("#catalog tbody td.appid").all_inner_texts())


def _filter(page: Page, **values: str) -> set[str]:
    """Set the filter form (text in ``q``, options in the selects), submit it, and read the rows."""
    for name, value in values.items():
        if name == "q":
            page.fill("input[name=q]", value)
        else:
            page.select_option(f"select[name={name}]", value)
    page.click("form.filters button[type=submit]")
    page.wait_for_load_state()
    return _shown(page)


def test_the_auditors_journey_in_a_real_browser(site: Served, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    console: list[ConsoleMessage] = []
    failures: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            accept_downloads=True,
            viewport={"width": 1400, "height": 900},
        )
        try:
            page = browser.new_page()
            page.on("console", lambda message: console.append(message))
            page.on("pageerror", lambda error: failures.append(str(error)))

            def shot(name: str) -> None:
                page.screenshot(path=ARTIFACTS / f"catalog-{name}.png", full_page=True)

            # Nothing before sign-in: the form, and only the form.
            page.goto(f"{site.gateway}/catalog")
            assert page.url == f"{site.gateway}/catalog/login"
            assert page.locator("table").count() == 0
            assert OA not in page.content()
            shot("1-sign-in")

            # A wrong key: said so, and still no table.
            page.fill("input[name=key]", "not-a-key")
            page.click("button[type=submit]")
            assert "This key was not accepted" in page.locator(".error").inner_text()
            assert page.locator("table").count() == 0
            shot("2-wrong-key")

            # The auditor's key: the table with every account, appids as text, the counts at the top.
            page.fill("input[name=key]", CLIENT_KEYS["audit"])
            page.click("button[type=submit]")
            page.wait_for_url(f"{site.gateway}/catalog")
            assert _shown(page) == {OA, MINI, OTHER}
            assert page.locator("#counts-binding").inner_text().count("unknown") == 1
            shot("3-catalog")

            # Each filter from the form, then the CSV of the current filter.
            assert _filter(page, q="shop") == {MINI}
            assert "q=shop" in page.url
            assert _filter(page, q="", platform="finance") == {OA, OTHER}
            assert _filter(page, platform="", kind="mini_program") == {MINI}
            assert _filter(page, kind="", status="revoked") == {OTHER}
            assert _filter(page, status="", binding="bound") == set()
            assert page.locator("#empty").is_visible()
            assert _filter(page, binding="unknown", platform="finance") == {OA, OTHER}
            shot("4-filtered")
            with page.expect_download() as download:
                page.click("#csv")
            exported = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
            assert {row["authorizer_appid"] for row in exported} == {OA, OTHER}
            csv_response = browser.request.get(
                site.gateway + (page.locator("#csv").get_attribute("href") or "")
            )
            assert csv_response.headers["content-type"].startswith("text/csv")
            csv_response.dispose()

            # Paging by the cursor.
            page.goto(f"{site.gateway}/catalog?limit=2")
            first = _shown(page)
            page.click("a[rel=next]")
            assert first | _shown(page) == {OA, MINI, OTHER}
            assert len(first) == 2

            # One account: its permission sets by component, token health, last sync.
            page.goto(f"{site.gateway}/catalog")
            page.click(f"text={OA}")
            assert page.locator("#appid").inner_text() == OA
            grants = page.locator("#grants").inner_text()
            assert "Retail" in grants
            assert "Finance" in grants
            assert "24 · " in grants
            shot("5-account")

            # The audit log.
            page.click("nav >> text=Audit log")
            assert "token.issued" in page.locator("#audit").inner_text()
            shot("6-audit")

            # Sign out: the session ends on the server, so the old cookie opens nothing.
            cookie = next(c["value"] for c in browser.cookies() if c["name"] == SESSION_COOKIE)
            page.click("button:has-text('Sign out')")
            page.wait_for_url(f"{site.gateway}/catalog/login?signed_out")
            assert page.locator(".notice").is_visible()
            shot("7-signed-out")
            for path in ("/catalog", "/catalog/export.csv", f"/catalog/{OA}"):
                replayed = httpx.get(f"{site.gateway}{path}", cookies={SESSION_COOKIE: cookie})
                assert (replayed.status_code, replayed.headers["location"]) == (303, "/catalog/login")
        finally:
            browser.close()
    assert failures == []
    assert [m.text for m in console if m.type in ("error", "warning")] == []


def test_it_works_without_javascript(site: Served, tmp_path: Path) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            java_script_enabled=False,
        )
        try:
            page = browser.new_page()
            page.goto(f"{site.gateway}/catalog")
            page.fill("input[name=key]", CLIENT_KEYS["audit"])
            page.click("button[type=submit]")
            page.wait_for_url(f"{site.gateway}/catalog")
            assert _filter(page, q="tea") == {OA}
            page.click("button:has-text('Sign out')")
            page.wait_for_url(f"{site.gateway}/catalog/login?signed_out")
            page.goto(f"{site.gateway}/catalog")
            assert page.url == f"{site.gateway}/catalog/login"
        finally:
            browser.close()

"""User logins through /wx (SPEC §4): an SDK's plain login calls with the client key as their secret,
sent to WeChat (the simulator) in their component-signed forms; user-token calls passed through; and
``cgi-bin/stable_token`` answered like ``cgi-bin/token``."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from gateway.proxy import policy as proxy
from gateway.registry.model import RateLimit, Registry, parse_registry
from tests.conftest import CLIENT_KEYS, REGISTRY_YAML, registry_environ
from tests.support.world import FINANCE, MINI, OA, RETAIL, World
from tests.test_proxy import gateway_token

SHOP_KEY = "shop-test-key"  # scope proxy, but only for the mini program


@pytest.fixture
def registry() -> Registry:
    """The test registry plus a proxy client limited to MINI."""
    shop = hashlib.sha256(SHOP_KEY.encode()).hexdigest()
    extra = f'  - {{id: shop, key_sha256: "{shop}", scopes: [proxy], authorizers: [{MINI}]}}\n'
    return parse_registry(REGISTRY_YAML + extra, source="test-registry.yaml", environ=registry_environ())


async def received(world: World) -> list[dict[str, Any]]:
    """The calls of WeChat's API the simulator received, oldest first."""
    requests: list[dict[str, Any]] = (await world.sim.get("/sim/requests")).json()["requests"]
    return requests


async def sns_received(world: World) -> list[dict[str, Any]]:
    return [r for r in await received(world) if r["endpoint"].startswith("sns/")]


def no_client_key_in(requests: list[dict[str, Any]]) -> bool:
    keys = set(CLIENT_KEYS.values()) | {SHOP_KEY}
    return not any(value in keys for r in requests for value in r["query"].values())


async def login_code(world: World, appid: str = MINI, user: str = "7") -> dict[str, Any]:
    response = await world.sim.post("/sim/login-codes", json={"authorizer_appid": appid, "user": user})
    assert response.status_code == 201, response.text
    code: dict[str, Any] = response.json()
    return code


async def oauth_code(world: World, scope: str = "snsapi_userinfo", component: str = "") -> dict[str, Any]:
    body = {"authorizer_appid": OA, "component_appid": component or FINANCE["appid"], "scope": scope}
    response = await world.sim.post("/sim/oauth-codes", json=body)
    assert response.status_code == 201, response.text
    code: dict[str, Any] = response.json()
    return code


@pytest.fixture
async def logins(ready: World) -> World:
    """MINI on retail with mini-program codes only (17: no set 18), OA's web service (4) on finance."""
    await ready.authorize("retail", MINI, [17], kind="mini_program")
    await ready.authorize("finance", OA, [4])
    await ready.sim.post("/sim/counters/reset")
    return ready


def jscode2session(code: str, secret: str = CLIENT_KEYS["crm"], **extra: str) -> dict[str, str]:
    return {"appid": MINI, "secret": secret, "js_code": code, "grant_type": "authorization_code"} | extra


# --- the mini program: sns/jscode2session -----------------------------------------------------------------


async def test_a_mini_program_login_is_sent_signed_by_the_serving_component(logins: World) -> None:
    code = await login_code(logins)
    before = len(await received(logins))
    response = await logins.gateway.get("/wx/sns/jscode2session", params=jscode2session(code["code"]))
    body = response.json()
    assert body["openid"] == code["openid"], body
    assert body["session_key"]
    sent = (await received(logins))[before:]
    assert [r["endpoint"] for r in sent if r["endpoint"].startswith("sns/")] == [
        "sns/component/jscode2session"
    ]
    query = next(r["query"] for r in sent if r["endpoint"] == "sns/component/jscode2session")
    assert query["appid"] == MINI
    assert query["js_code"] == code["code"]
    assert query["grant_type"] == "authorization_code"
    assert query["component_appid"] == RETAIL["appid"]
    assert query["component_access_token"]
    assert "secret" not in query
    assert no_client_key_in(await received(logins))
    # The code is the user's, used once: WeChat's refusal of a second use passes through.
    again = await logins.gateway.get("/wx/sns/jscode2session", params=jscode2session(code["code"]))
    assert again.json()["errcode"] == 40163


async def test_an_sdks_gateway_token_beside_the_secret_stays_here(logins: World) -> None:
    token = await gateway_token(logins, MINI)  # wechatpy adds its access_token to every call
    code = await login_code(logins)
    params = jscode2session(code["code"], access_token=token)
    assert (await logins.gateway.get("/wx/sns/jscode2session", params=params)).json()["openid"]
    assert all(token not in r["query"].values() for r in await received(logins))


async def test_the_explicit_component_form_still_takes_a_gateway_token(logins: World) -> None:
    token = await gateway_token(logins, MINI)
    code = await login_code(logins)
    params = {
        "access_token": token,
        "appid": MINI,
        "js_code": code["code"],
        "grant_type": "authorization_code",
    }
    response = await logins.gateway.get("/wx/sns/component/jscode2session", params=params)
    assert response.json()["openid"] == code["openid"]


# --- refusals, in WeChat's words, before anything reaches WeChat ------------------------------------------

REFUSED = {
    "wrong key": ("sns/jscode2session", jscode2session("c", secret="not-a-key"), 40125),
    "key without proxy": ("sns/jscode2session", jscode2session("c", secret=CLIENT_KEYS["limited"]), 48001),
    "authorizer outside the client's list": (
        "sns/oauth2/access_token",
        {"appid": OA, "secret": SHOP_KEY, "code": "c", "grant_type": "authorization_code"},
        48001,
    ),
    "no secret": (
        "sns/jscode2session",
        {"appid": MINI, "js_code": "c", "grant_type": "authorization_code"},
        41004,
    ),
    "no appid": (
        "sns/jscode2session",
        {"secret": CLIENT_KEYS["crm"], "js_code": "c", "grant_type": "authorization_code"},
        41002,
    ),
    "no js_code": (
        "sns/jscode2session",
        {"appid": MINI, "secret": CLIENT_KEYS["crm"], "grant_type": "authorization_code"},
        41008,
    ),
    "wrong grant_type": ("sns/jscode2session", jscode2session("c", grant_type="client_credential"), 40002),
    "unknown authorizer": (
        "sns/jscode2session",
        jscode2session("c", appid="wxnobody00000001"),
        40013,
    ),
    "oauth without code": (
        "sns/oauth2/access_token",
        {"appid": OA, "secret": CLIENT_KEYS["crm"], "grant_type": "authorization_code"},
        41008,
    ),
    "oauth with a wrong key": (
        "sns/oauth2/access_token",
        {"appid": OA, "secret": "nope", "code": "c", "grant_type": "authorization_code"},
        40125,
    ),
    "refresh without refresh_token": (
        "sns/oauth2/refresh_token",
        {"appid": OA, "grant_type": "refresh_token"},
        41003,
    ),
    "refresh with a wrong grant_type": (
        "sns/oauth2/refresh_token",
        {"appid": OA, "grant_type": "authorization_code", "refresh_token": "r"},
        40002,
    ),
    "refresh with a wrong key as secret": (
        "sns/oauth2/refresh_token",
        {"appid": OA, "grant_type": "refresh_token", "refresh_token": "r", "secret": "nope"},
        40125,
    ),
    "refresh with a key without proxy": (
        "sns/oauth2/refresh_token",
        {"appid": OA, "grant_type": "refresh_token", "refresh_token": "r", "secret": CLIENT_KEYS["limited"]},
        48001,
    ),
}


@pytest.mark.parametrize(("path", "params", "errcode"), REFUSED.values(), ids=REFUSED.keys())
async def test_login_refusals(logins: World, path: str, params: dict[str, str], errcode: int) -> None:
    before = len(await received(logins))
    response = await logins.gateway.get(f"/wx/{path}", params=params)
    assert response.status_code == 200
    assert response.json()["errcode"] == errcode, response.json()
    assert response.json()["errmsg"]
    assert len(await received(logins)) == before  # nothing reached WeChat, not even a token fetch
    assert not any(key in response.text for key in CLIENT_KEYS.values())


async def test_a_refusal_names_the_missing_scope(logins: World) -> None:
    params = jscode2session("c", secret=CLIENT_KEYS["limited"])
    assert "'proxy'" in (await logins.gateway.get("/wx/sns/jscode2session", params=params)).json()["errmsg"]


# --- the official account: web OAuth, then the user's own token ------------------------------------------


async def test_web_oauth_login_refresh_and_the_users_own_token(logins: World) -> None:
    code = await oauth_code(logins)
    params = {
        "appid": OA,
        "secret": CLIENT_KEYS["crm"],
        "code": code["code"],
        "grant_type": "authorization_code",
    }
    granted = (await logins.gateway.get("/wx/sns/oauth2/access_token", params=params)).json()
    assert granted["openid"] == code["openid"], granted
    assert granted["scope"] == "snsapi_userinfo"
    user_token, refresh = granted["access_token"], granted["refresh_token"]
    assert user_token and refresh  # the user's tokens reach the client: they are not the gateway's to keep

    # The user's token at sns/userinfo and sns/auth: passed through untouched.
    info_params = {"access_token": user_token, "openid": code["openid"], "lang": "en"}
    info = (await logins.gateway.get("/wx/sns/userinfo", params=info_params)).json()
    assert info["openid"] == code["openid"] and info["country"] == "China", info
    auth_params = {"access_token": user_token, "openid": code["openid"]}
    assert (await logins.gateway.get("/wx/sns/auth", params=auth_params)).json()["errcode"] == 0

    # The refresh as an SDK sends it: no secret (WeChat's plain refresh takes none).
    refreshed = (
        await logins.gateway.get(
            "/wx/sns/oauth2/refresh_token",
            params={"appid": OA, "grant_type": "refresh_token", "refresh_token": refresh},
        )
    ).json()
    assert refreshed["access_token"] and refreshed["access_token"] != user_token, refreshed
    assert refreshed["refresh_token"] == refresh
    info_params["access_token"] = refreshed["access_token"]
    assert (await logins.gateway.get("/wx/sns/userinfo", params=info_params)).json()["openid"] == code[
        "openid"
    ]

    sns = await sns_received(logins)
    assert [r["endpoint"] for r in sns] == [
        "sns/oauth2/component/access_token",
        "sns/userinfo",
        "sns/auth",
        "sns/oauth2/component/refresh_token",
        "sns/userinfo",
    ]
    for signed in (sns[0], sns[3]):
        assert signed["query"]["component_appid"] == FINANCE["appid"]  # finance holds set 4 for OA
        assert signed["query"]["appid"] == OA
        assert "secret" not in signed["query"]
    assert sns[1]["query"] == {"access_token": user_token, "openid": code["openid"], "lang": "en"}
    assert no_client_key_in(await received(logins))


async def test_a_user_token_call_is_passed_on_as_it_is(logins: World) -> None:
    params = {"access_token": "not-a-user-token", "openid": "o1"}
    response = await logins.gateway.get("/wx/sns/userinfo", params=params)
    assert response.json()["errcode"] == 40001  # WeChat's own answer: no gateway-token lookup here
    assert (await sns_received(logins))[-1]["query"] == params
    assert (await logins.gateway.get("/wx/sns/auth", params={"openid": "o1"})).json()["errcode"] == 41001


@pytest.mark.parametrize("path", ["sns/oauth2/component/access_token", "sns/other", "cgi-bin/user/get"])
async def test_only_user_token_paths_go_without_a_client(logins: World, path: str) -> None:
    response = await logins.gateway.get(f"/wx/{path}", params={"access_token": "not-a-gateway-token"})
    assert response.json()["errcode"] == 40001  # a gateway token was required, and refused
    assert await sns_received(logins) == []


async def test_web_oauth_without_set_4_is_refused_by_routing(ready: World) -> None:
    params = {"appid": OA, "secret": CLIENT_KEYS["crm"], "code": "c", "grant_type": "authorization_code"}
    response = await ready.gateway.get("/wx/sns/oauth2/access_token", params=params)
    assert response.json()["errcode"] == 48001
    assert "permission set 4" in response.json()["errmsg"]


def anonymous_refresh(appid: str = OA) -> dict[str, str]:
    return {"appid": appid, "grant_type": "refresh_token", "refresh_token": "not-a-refresh-token"}


async def test_anonymous_refreshes_are_rate_limited_per_authorizer(
    logins: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = RateLimit(per_second=0.01, burst=3)
    monkeypatch.setattr(proxy, "ANONYMOUS_REFRESH_LIMIT", limit, raising=False)
    for _ in range(3):
        answer = await logins.gateway.get("/wx/sns/oauth2/refresh_token", params=anonymous_refresh())
        assert answer.status_code == 200 and answer.json()["errcode"] == 40030, answer.json()  # WeChat's
    before = len(await received(logins))
    refused = await logins.gateway.get("/wx/sns/oauth2/refresh_token", params=anonymous_refresh())
    assert refused.status_code == 429, refused.text
    assert refused.json()["errcode"] == 45009 and int(refused.headers["retry-after"]) >= 1
    assert len(await received(logins)) == before  # nothing sent
    # Another authorizer has its own bucket; a client that sends its key has its own limit.
    other = await logins.gateway.get("/wx/sns/oauth2/refresh_token", params=anonymous_refresh(MINI))
    assert other.status_code == 200
    keyed = anonymous_refresh() | {"secret": CLIENT_KEYS["crm"]}
    assert (await logins.gateway.get("/wx/sns/oauth2/refresh_token", params=keyed)).status_code == 200


async def test_an_anonymous_refresh_cannot_tell_unknown_appids_from_unsignable_ones(ready: World) -> None:
    await ready.authorize("finance", MINI, [4, 17], kind="mini_program")
    revoke = {"component_appid": FINANCE["appid"], "authorizer_appid": MINI}
    assert (await ready.sim.post("/sim/authorizations/revoke", json=revoke)).status_code == 200
    await ready.services.authorizations.process_pending()
    revoked = await ready.services.store.authorizations.get("finance", MINI)
    assert revoked is not None and revoked.status == "revoked"
    answers = {
        appid: await ready.gateway.get("/wx/sns/oauth2/refresh_token", params=anonymous_refresh(appid))
        for appid in (
            "wxnobody00000001",  # not served
            OA,  # served, but no component holds its web service (set 4)
            MINI,  # revoked
        )
    }
    bodies = {appid: (a.status_code, a.json()) for appid, a in answers.items()}
    assert len({repr(b) for b in bodies.values()}) == 1, bodies
    assert bodies[OA] == (200, {"errcode": 40013, "errmsg": "invalid appid"})
    assert await sns_received(ready) == []
    # With a client key the refusal still says why.
    keyed = anonymous_refresh(OA) | {"secret": CLIENT_KEYS["crm"]}
    assert (await ready.gateway.get("/wx/sns/oauth2/refresh_token", params=keyed)).json()["errcode"] == 48001


# --- cgi-bin/stable_token -----------------------------------------------------------------------------------


def stable(**members: Any) -> dict[str, Any]:
    return {"grant_type": "client_credential", "appid": OA, "secret": CLIENT_KEYS["crm"]} | members


async def test_stable_token_answers_like_cgi_bin_token(ready: World) -> None:
    response = await ready.gateway.post("/wx/cgi-bin/stable_token", json=stable(force_refresh=False))
    body = response.json()
    assert response.status_code == 200  # as WeChat answers (not the 201 of a POST handler's default)
    assert set(body) == {"access_token", "expires_in"}, body
    assert body["access_token"].startswith("gw_") and body["expires_in"] == 7200
    assert response.headers["cache-control"] == "no-store"
    forced = (await ready.gateway.post("/wx/cgi-bin/stable_token", json=stable(force_refresh=True))).json()
    for token in (body["access_token"], forced["access_token"]):  # the earlier one stays valid
        users = await ready.gateway.get("/wx/cgi-bin/user/get", params={"access_token": token})
        assert users.json()["total"] >= 1
    assert await ready.calls("stable_token") == 0  # WeChat's stable_token is not for components


async def issued_tokens(world: World) -> int:
    async with world.services.store.engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM gateway_tokens"))).scalar_one())


async def test_stable_token_answers_the_same_token_while_it_lasts_unless_forced(ready: World) -> None:
    # WeChat's stable_token: "access_token有效期内重复调用该接口不会更新" (api_getstableaccesstoken).
    first = (await ready.gateway.post("/wx/cgi-bin/stable_token", json=stable())).json()
    again = [(await ready.gateway.post("/wx/cgi-bin/stable_token", json=stable())).json() for _ in range(5)]
    assert {a["access_token"] for a in again} == {first["access_token"]}
    assert all(7190 <= a["expires_in"] <= 7200 for a in again), again
    assert await issued_tokens(ready) == 1
    forced = (await ready.gateway.post("/wx/cgi-bin/stable_token", json=stable(force_refresh=True))).json()
    assert forced["access_token"] != first["access_token"] and forced["expires_in"] == 7200
    after = (await ready.gateway.post("/wx/cgi-bin/stable_token", json=stable())).json()
    assert after["access_token"] == forced["access_token"]
    assert await issued_tokens(ready) == 2
    # cgi-bin/token still mints a new one each time.
    plain = await gateway_token(ready)
    assert plain not in (first["access_token"], forced["access_token"])


async def test_stable_token_mints_anew_when_the_held_one_is_revoked_or_nearly_expired(
    ready: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = (await ready.gateway.post("/wx/cgi-bin/stable_token", json=stable())).json()["access_token"]
    await ready.services.store.gateway_tokens.revoke(client_id="crm")  # as another process would
    await asyncio.sleep(proxy.RESOLVED_CACHE_S)
    second = (await ready.gateway.post("/wx/cgi-bin/stable_token", json=stable())).json()["access_token"]
    assert second != first
    monkeypatch.setattr(proxy, "STABLE_TOKEN_MIN_LEFT_S", 7201.0, raising=False)  # any is nearly expired
    third = (await ready.gateway.post("/wx/cgi-bin/stable_token", json=stable())).json()["access_token"]
    assert third not in (first, second)
    users = await ready.gateway.get("/wx/cgi-bin/user/get", params={"access_token": third})
    assert users.json()["total"] >= 1


@pytest.mark.parametrize(
    ("content", "errcode"),
    [
        (b"not json", 47001),
        (b"[1, 2]", 47001),
        (b'{"grant_type": "client_credential", "appid": 5, "secret": "x"}', 47001),
        (httpx.Request("POST", "/", json=stable(force_refresh="yes")).read(), 47001),
        (httpx.Request("POST", "/", json=stable(secret=None)).read(), 41004),
        (httpx.Request("POST", "/", json={"appid": OA, "secret": CLIENT_KEYS["crm"]}).read(), 40002),
        (httpx.Request("POST", "/", json=stable(appid="")).read(), 41002),
        (httpx.Request("POST", "/", json=stable(secret="nope")).read(), 40125),
        (httpx.Request("POST", "/", json=stable(secret=CLIENT_KEYS["limited"])).read(), 48001),
    ],
)
async def test_stable_token_refusals(ready: World, content: bytes, errcode: int) -> None:
    response = await ready.gateway.post(
        "/wx/cgi-bin/stable_token", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.json()["errcode"] == errcode, response.json()
    assert CLIENT_KEYS["crm"] not in response.text


async def test_stable_token_needs_post(ready: World) -> None:
    response = await ready.gateway.get("/wx/cgi-bin/stable_token", params=stable())
    assert response.json()["errcode"] == 43002

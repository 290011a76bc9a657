"""The WeChat-compatible proxy (/wx) against the simulator, in-process."""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from gateway.crypto import SecretBox
from gateway.http.app import create_app
from gateway.registry.model import Registry
from tests.conftest import CLIENT_KEYS, make_settings
from tests.support.asgi import running
from tests.support.world import OA, RETAIL, World

MINI = "wxc0000000000003"  # a mini program


async def gateway_token(world: World, appid: str = OA, client: str = "crm") -> str:
    response = await world.gateway.get(
        "/wx/cgi-bin/token",
        params={"grant_type": "client_credential", "appid": appid, "secret": CLIENT_KEYS[client]},
    )
    body = response.json()
    assert "access_token" in body, body
    token: str = body["access_token"]
    return token


async def wx(world: World, method: str, path: str, token: str, **kwargs: Any) -> httpx.Response:
    params = {"access_token": token} | kwargs.pop("params", {})
    return await world.gateway.request(method, f"/wx/{path}", params=params, **kwargs)


async def test_gateway_token_in_wechats_shape_and_stored_hashed(ready: World) -> None:
    response = await ready.gateway.get(
        "/wx/cgi-bin/token",
        params={"grant_type": "client_credential", "appid": OA, "secret": CLIENT_KEYS["crm"]},
    )
    body = response.json()
    assert set(body) == {"access_token", "expires_in"}
    assert body["expires_in"] == 7200
    async with ready.services.store.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT * FROM gateway_tokens"))).all()
    assert len(rows) == 1
    assert body["access_token"] not in str(rows)


async def test_a_call_goes_through_with_the_real_token(ready: World) -> None:
    token = await gateway_token(ready)
    users = await wx(ready, "GET", "cgi-bin/user/get", token)
    assert users.status_code == 200
    assert users.json()["total"] >= 1
    assert token not in str(await ready.sim.get("/sim/state"))  # WeChat never sees a gateway token
    sent = await wx(
        ready,
        "POST",
        "cgi-bin/message/custom/send",
        token,
        json={"touser": users.json()["data"]["openid"][0], "msgtype": "text", "text": {"content": "你好"}},
    )
    assert sent.json()["errcode"] == 0
    messages = (await ready.sim.get("/sim/messages")).json()["messages"]
    assert messages[-1]["message"]["text"]["content"] == "你好"


async def test_a_bearer_key_with_the_authorizer_header_works_too(ready: World) -> None:
    headers = {"Authorization": f"Bearer {CLIENT_KEYS['crm']}", "X-Authorizer-Appid": OA}
    response = await ready.gateway.get("/wx/cgi-bin/user/get", headers=headers)
    assert response.json()["total"] >= 1


async def test_media_upload_and_binary_download_pass_byte_for_byte(ready: World) -> None:
    await ready.authorize("finance", OA, [11, 15])
    token = await gateway_token(ready)
    image = bytes(range(256)) * 2000  # 512 KB of every byte value
    uploaded = await wx(
        ready,
        "POST",
        "cgi-bin/media/upload",
        token,
        params={"type": "image"},
        files={"media": ("photo.jpg", image, "image/jpeg")},
    )
    media_id = uploaded.json()["media_id"]
    downloaded = await wx(ready, "GET", "cgi-bin/media/get", token, params={"media_id": media_id})
    assert downloaded.status_code == 200
    assert downloaded.headers["content-type"] == "image/jpeg"
    assert downloaded.content == image
    assert "photo.jpg" in downloaded.headers["content-disposition"]


async def test_mini_program_code_png_passes_through(ready: World) -> None:
    await ready.authorize("retail", MINI, [17, 18, 25], kind="mini_program")
    token = await gateway_token(ready, MINI)
    response = await wx(ready, "POST", "wxa/getwxacode", token, json={"path": "pages/index?x=1"})
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(b"\x89PNG\r\n\x1a\n")
    idat = response.content.index(b"IDAT")
    length = int.from_bytes(response.content[idat - 4 : idat], "big")
    zlib.decompress(response.content[idat + 4 : idat + 4 + length])


async def test_routing_by_api_path_across_two_components(ready: World) -> None:
    # OA: retail holds 1, 2, 24; finance gets the custom menu (15) only.
    await ready.authorize("finance", OA, [15])
    token = await gateway_token(ready)
    menu = {"button": [{"type": "click", "name": "Hi", "key": "hi"}]}
    assert (await wx(ready, "POST", "cgi-bin/menu/create", token, json=menu)).json()["errcode"] == 0
    assert (await wx(ready, "GET", "cgi-bin/user/get", token)).json()["total"] >= 1
    counters = await ready.counters()
    assert counters["menu/create"]["by_key"] == {OA: 1}
    tokens_by_component = (await ready.sim.get("/sim/state")).json()
    assert tokens_by_component  # both authorizations exist
    missing = await wx(ready, "POST", "wxa/getwxacode", token, json={"path": "x"})
    assert missing.json()["errcode"] == 48001
    assert "17" in missing.json()["errmsg"]


async def test_stale_real_tokens_are_renewed_once_and_the_call_retried(ready: World) -> None:
    token = await gateway_token(ready)
    assert (await wx(ready, "GET", "cgi-bin/user/get", token)).status_code == 200
    await ready.sim.post("/sim/expire", json={"what": "authorizer"})  # WeChat alone says: expired
    await ready.reset_counters()
    responses = await asyncio.gather(*(wx(ready, "GET", "cgi-bin/user/get", token) for _ in range(20)))
    assert all(r.json().get("total") for r in responses)
    assert await ready.calls("api_authorizer_token", OA) == 1


@pytest.mark.parametrize(
    ("params", "errcode"),
    [
        ({"grant_type": "client_credential", "appid": OA, "secret": "wrong"}, 40125),
        ({"grant_type": "password", "appid": OA, "secret": CLIENT_KEYS["crm"]}, 40002),
        ({"grant_type": "client_credential", "appid": OA}, 41004),
        ({"grant_type": "client_credential", "secret": CLIENT_KEYS["crm"]}, 41002),
        (
            {"grant_type": "client_credential", "appid": OA, "secret": CLIENT_KEYS["limited"]},
            48001,
        ),  # no proxy
        (
            {"grant_type": "client_credential", "appid": "wxnobody00000001", "secret": CLIENT_KEYS["crm"]},
            40013,
        ),
    ],
)
async def test_token_refusals(ready: World, params: dict[str, str], errcode: int) -> None:
    response = await ready.gateway.get("/wx/cgi-bin/token", params=params)
    assert response.status_code == 200
    assert response.json()["errcode"] == errcode
    assert response.json()["errmsg"]


async def test_scope_refusal_names_the_scope(ready: World) -> None:
    response = await ready.gateway.get(
        "/wx/cgi-bin/token",
        params={"grant_type": "client_credential", "appid": OA, "secret": CLIENT_KEYS["limited"]},
    )
    assert "'proxy'" in response.json()["errmsg"]


async def test_gateway_token_states(ready: World) -> None:
    assert (await wx(ready, "GET", "cgi-bin/user/get", "gw_unknown")).json()["errcode"] == 40001
    assert (await ready.gateway.get("/wx/cgi-bin/user/get")).json()["errcode"] == 41001
    token = await gateway_token(ready)
    async with ready.services.store.engine.begin() as conn:
        await conn.execute(text("UPDATE gateway_tokens SET expires_at = 1"))
    assert (await wx(ready, "GET", "cgi-bin/user/get", token)).json()["errcode"] == 42001
    fresh = await gateway_token(ready)
    assert await ready.services.proxy.revoke_tokens("crm") == 2
    assert (await wx(ready, "GET", "cgi-bin/user/get", fresh)).json()["errcode"] == 40001
    assert await ready.calls("user/get") == 0


async def test_wechat_answers_pass_through_unchanged_whatever_their_status(ready: World) -> None:
    token = await gateway_token(ready)
    await ready.fault(endpoint="user/get", http_status=503, times=1)
    response = await wx(ready, "GET", "cgi-bin/user/get", token)
    assert response.status_code == 503
    assert b"503" in response.content
    await ready.fault(endpoint="user/get", errcode=45009, times=1)
    assert (await wx(ready, "GET", "cgi-bin/user/get", token)).json()["errcode"] == 45009


@pytest.mark.parametrize(
    ("failure", "status"), [(httpx.ConnectError("refused"), 502), (httpx.ReadTimeout("slow"), 504)]
)
async def test_unreachable_wechat_is_minus_one(
    ready: World,
    registry: Registry,
    database_url: str,
    secret_box: SecretBox,
    failure: Exception,
    status: int,
) -> None:
    token = await gateway_token(ready)
    await ready.services.tokens.authorizer_token("retail", OA)  # stored: only the call itself fails

    def fail(request: httpx.Request) -> httpx.Response:
        raise failure

    app = create_app(
        make_settings(database_url, secret_box),
        registry,
        transport=httpx.MockTransport(fail),
        background=False,
    )
    async with running(app) as isolated:
        response = await isolated.get("/wx/cgi-bin/user/get", params={"access_token": token})
    assert response.status_code == status
    assert response.json()["errcode"] == -1


async def test_component_signed_calls_get_the_component_credentials(ready: World) -> None:
    await ready.authorize("retail", MINI, [17, 18, 25], kind="mini_program")
    token = await gateway_token(ready, MINI)
    code = (await ready.sim.post("/sim/login-codes", json={"authorizer_appid": MINI})).json()
    response = await wx(
        ready,
        "GET",
        "sns/component/jscode2session",
        token,
        params={"appid": MINI, "js_code": code["code"], "grant_type": "authorization_code"},
    )
    body = response.json()
    assert body.get("openid") == code["openid"], body
    assert body.get("session_key")


async def test_component_calls_need_the_component_scope(ready: World) -> None:
    body = {"component_appid": RETAIL["appid"], "offset": 0, "count": 10}
    path = "/wx/component/retail/cgi-bin/component/api_get_authorizer_list"
    ops = await ready.gateway.post(path, json=body, headers={"Authorization": f"Bearer {CLIENT_KEYS['ops']}"})
    assert ops.json()["total_count"] == 1
    crm = await ready.gateway.post(path, json=body, headers={"Authorization": f"Bearer {CLIENT_KEYS['crm']}"})
    assert crm.json()["errcode"] == 48001
    assert "'component'" in crm.json()["errmsg"]


@pytest.mark.parametrize(
    "path", ["cgi-bin/%2E%2E/secret", "cgi-bin//user", "cgi-bin/user/get%00", "cgi-bin/a b"]
)
async def test_odd_paths_are_refused(ready: World, path: str) -> None:
    token = await gateway_token(ready)
    response = await ready.gateway.get(f"/wx/{path}", params={"access_token": token})
    assert response.json()["errcode"] in (40066, 47001)
    assert await ready.calls("user/get") == 0


async def test_metrics_count_proxied_calls(ready: World) -> None:
    token = await gateway_token(ready)
    await wx(ready, "GET", "cgi-bin/user/get", token)
    metrics = (await ready.gateway.get("/metrics")).text
    assert (
        'gateway_wx_calls_total{api="cgi-bin/user/get",client="crm",errcode="0",platform="retail"} 1.0'
        in metrics
    )
    assert token not in metrics

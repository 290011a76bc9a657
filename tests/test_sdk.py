"""An unmodified SDK through the gateway: wechatpy's WeChatClient with only its API host changed.

Both the gateway and the simulator listen on real loopback sockets (wechatpy speaks `requests`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from wechatpy import WeChatClient
from wechatpy.oauth import WeChatOAuth

from tests.conftest import CLIENT_KEYS, PLATFORM_SECRETS
from tests.support.flows import approve_over_sockets
from tests.support.sockets import Served, served

OA = "wxa0000000000001"
MINI = "wxc0000000000003"
RETAIL = PLATFORM_SECRETS["retail"]


class GatewayWeChatClient(WeChatClient):  # type: ignore[misc]
    """wechatpy's client with its API host set to the gateway: the one change an app makes.

    wechatpy spells its token URL out in full, so the host change reaches it here.
    """

    def __init__(self, host: str, appid: str, secret: str, **kwargs: Any) -> None:
        super().__init__(appid, secret, **kwargs)
        self.API_BASE_URL = f"{host}/wx/cgi-bin/"
        self.wxa.API_BASE_URL = f"{host}/wx/"
        self._host = host

    def fetch_access_token(self) -> dict[str, Any]:
        result: dict[str, Any] = self._fetch_access_token(
            url=f"{self._host}/wx/cgi-bin/token",
            params={"grant_type": "client_credential", "appid": self.appid, "secret": self.secret},
        )
        return result


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Served]:
    """Both apps on sockets, OA (with web service, 4) and a mini program authorized on retail, counters
    reset."""
    with served(tmp_path) as both:
        approve_over_sockets(both.simulator, RETAIL["appid"], RETAIL["secret"], OA, [1, 2, 4, 11, 15, 24])
        approve_over_sockets(
            both.simulator, RETAIL["appid"], RETAIL["secret"], MINI, [17, 18, 25], kind="mini_program"
        )
        for appid in (OA, MINI):
            _wait_for_authorization(both.gateway, appid)
        httpx.post(f"{both.simulator}/sim/counters/reset")
        yield both


def _wait_for_authorization(gateway: str, appid: str) -> None:
    headers = {"Authorization": f"Bearer {CLIENT_KEYS['crm']}"}
    for _ in range(300):
        if httpx.get(f"{gateway}/v1/authorizers/{appid}/access-token", headers=headers).status_code == 200:
            return
        time.sleep(0.02)
    raise AssertionError(f"the gateway never learned of {appid}")


def _minted(servers: Served, endpoint: str, key: str) -> int:
    """Successful calls: tokens WeChat minted (a call refused, e.g. for a stale component token, is not)."""
    counter = httpx.get(f"{servers.simulator}/sim/counters").json().get(endpoint, {"ok_by_key": {}})
    return int(counter["ok_by_key"].get(key, 0))


def test_wechatpy_works_through_the_gateway_and_survives_expiry(servers: Served) -> None:
    oa = GatewayWeChatClient(servers.gateway, OA, CLIENT_KEYS["crm"])  # fetches its gateway token itself
    mini = GatewayWeChatClient(servers.gateway, MINI, CLIENT_KEYS["crm"])

    def exercise() -> None:
        followers = oa.user.get_followers()
        assert followers["total"] >= 1
        openid = followers["data"]["openid"][0]
        assert oa.message.send_text(openid, "hello from wechatpy")["errcode"] == 0
        menu = {"button": [{"type": "click", "name": "Today", "key": "today"}]}
        assert oa.menu.create(menu)["errcode"] == 0
        picture = bytes(range(256)) * 64
        uploaded = oa.media.upload("image", ("photo.jpg", picture, "image/jpeg"))
        assert uploaded["media_id"]
        assert oa.media.download(uploaded["media_id"]).content == picture
        code = mini.wxa.get_wxa_code("pages/index/index")
        assert code.content.startswith(b"\x89PNG\r\n\x1a\n")

    exercise()
    assert oa.access_token.startswith("gw_")  # a gateway token, never WeChat's
    for appid in (OA, MINI):
        assert _minted(servers, "api_authorizer_token", appid) == 0  # fetched while setting up, then reused
    httpx.post(f"{servers.simulator}/sim/expire", json={"what": "all"}).raise_for_status()
    httpx.post(f"{servers.simulator}/sim/counters/reset")
    exercise()
    for appid in (OA, MINI):
        assert _minted(servers, "api_authorizer_token", appid) == 1  # one renewal per authorizer
    assert _minted(servers, "api_component_token", RETAIL["appid"]) == 1  # and one of the component token


def _sent_to_wechat(servers: Served) -> list[dict[str, Any]]:
    requests: list[dict[str, Any]] = httpx.get(f"{servers.simulator}/sim/requests").json()["requests"]
    return requests


def test_wechatpy_logs_a_mini_program_user_in_through_the_gateway(servers: Served) -> None:
    code = httpx.post(f"{servers.simulator}/sim/login-codes", json={"authorizer_appid": MINI}).json()
    mini = GatewayWeChatClient(servers.gateway, MINI, CLIENT_KEYS["crm"])
    session = mini.wxa.code_to_session(code["code"])  # sns/jscode2session with the client key as secret
    assert session["openid"] == code["openid"]
    assert session["session_key"]
    sent = _sent_to_wechat(servers)
    assert "sns/component/jscode2session" in [r["endpoint"] for r in sent]
    assert all(CLIENT_KEYS["crm"] not in r["query"].values() for r in sent)


def test_wechatpy_web_oauth_through_the_gateway(servers: Served) -> None:
    code = httpx.post(
        f"{servers.simulator}/sim/oauth-codes",
        json={"authorizer_appid": OA, "component_appid": RETAIL["appid"], "scope": "snsapi_userinfo"},
    ).json()
    oauth = WeChatOAuth(OA, CLIENT_KEYS["crm"], "https://crm.example/oauth/done", scope="snsapi_userinfo")
    oauth.API_BASE_URL = f"{servers.gateway}/wx/"  # wechatpy's OAuth host: the one change an app makes
    granted = oauth.fetch_access_token(code["code"])
    assert granted["openid"] == code["openid"]
    assert oauth.get_user_info()["openid"] == code["openid"]
    assert oauth.check_access_token()
    first = oauth.access_token
    refreshed = oauth.refresh_access_token(oauth.refresh_token)
    assert refreshed["access_token"] == oauth.access_token != first
    assert oauth.get_user_info()["nickname"]
    sent = _sent_to_wechat(servers)
    endpoints = [r["endpoint"] for r in sent if r["endpoint"].startswith("sns/")]
    assert endpoints == [
        "sns/oauth2/component/access_token",
        "sns/userinfo",
        "sns/auth",
        "sns/oauth2/component/refresh_token",
        "sns/userinfo",
    ]
    assert all(CLIENT_KEYS["crm"] not in r["query"].values() for r in sent)

"""The faithfulness test: wechatpy, a real WeChat SDK, drives the simulator over real HTTP.

If an SDK written against WeChat cannot go ticket → component token → pre-auth code → authorization →
query auth → refresh → authorizer APIs here, the simulator is not faithful.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from wechatpy.client import WeChatComponentClient
from wechatpy.component import ComponentAuthorizedMessage, ComponentVerifyTicketMessage, WeChatComponent
from wechatpy.exceptions import WeChatClientException

from gateway.simulator import SimulatorConfig, create_simulator_app
from tests.simulator.helpers import RETAIL, Inbox
from tests.support.servers import serve_in_thread

OA = "wxa0000000000001"
MP = "wxb0000000000002"


class Peer:
    """The simulator under uvicorn on a loopback port, a /sim client, and wechatpy's component aimed at it."""

    def __init__(self, base_url: str, inbox: Inbox) -> None:
        self.base_url = base_url
        self.inbox = inbox
        self.control = httpx.Client(base_url=base_url + "/sim", timeout=5)
        self.component = WeChatComponent(RETAIL.appid, RETAIL.secret, RETAIL.token, RETAIL.encoding_aes_key)
        self.component.API_BASE_URL = base_url + "/cgi-bin"
        self.sessions = [self.component._http]  # requests sessions the SDK never closes itself

    def client(self, appid: str) -> WeChatComponentClient:
        """wechatpy's client for an authorizer, pointed at the simulator."""
        client = self.component.get_client_by_appid(appid)
        client.API_BASE_URL = self.base_url + "/cgi-bin/"
        self.sessions.append(client._http)
        return client

    def close(self) -> None:
        self.control.close()
        for session in self.sessions:
            session.close()


@pytest.fixture
def peer() -> Iterator[Peer]:
    inbox = Inbox()
    config = SimulatorConfig(components=[RETAIL], ticket_interval_s=0, push_on_start=False)
    app = create_simulator_app(config, push_transport=httpx.MockTransport(inbox.handle))
    with serve_in_thread(app) as base_url:
        peer = Peer(base_url, inbox)
        try:
            yield peer
        finally:
            peer.close()


def feed(peer: Peer) -> object:
    """Hand the latest push to wechatpy exactly as a web framework would."""
    request = peer.inbox.requests[-1]
    params = request.url.params
    return peer.component.parse_message(
        request.content.decode(), params["msg_signature"], params["timestamp"], params["nonce"]
    )


def test_wechatpy_completes_the_authorization_flow(peer: Peer) -> None:
    control, component = peer.control, peer.component

    # a ticket push, decrypted and cached by the SDK
    pushed = control.post(f"/components/{RETAIL.appid}/push-ticket").json()
    message = feed(peer)
    assert isinstance(message, ComponentVerifyTicketMessage)
    assert component.component_verify_ticket == pushed["ticket"]

    # the pre-auth code fetches the component token implicitly
    pre_auth_code = component.create_preauthcode()["pre_auth_code"]
    seeded = {
        "authorizer_appid": OA,
        "kind": "official_account",
        "nick_name": "ACME",
        "principal_name": "ACME",
    }
    control.post("/authorizers", json=seeded | {"followers": 3, "components": {}}).raise_for_status()
    approved = control.post(
        f"/pre-auth-codes/{pre_auth_code}/approve",
        json={"authorizer_appid": OA, "func_ids": [1, 2, 11, 15]},
    ).json()

    # the `authorized` push: wechatpy decrypts it and calls api_query_auth by itself
    authorized = feed(peer)
    assert isinstance(authorized, ComponentAuthorizedMessage)
    assert authorized.authorization_code == approved["auth_code"]
    info = authorized.query_auth_result["authorization_info"]
    assert info["authorizer_appid"] == OA
    assert [f["funcscope_category"]["id"] for f in info["func_info"]] == [1, 2, 11, 15]
    with pytest.raises(WeChatClientException) as reused:
        component.query_auth(approved["auth_code"])
    assert reused.value.errcode == 61009

    refreshed = component.refresh_authorizer_token(OA, info["authorizer_refresh_token"])
    assert refreshed["authorizer_refresh_token"] == info["authorizer_refresh_token"]
    assert refreshed["expires_in"] == 7200
    assert component.get_authorizer_info(OA)["authorizer_info"]["nick_name"] == "ACME"
    listed = component.get_authorizer_list()
    assert [a["authorizer_appid"] for a in listed["list"]] == [OA]

    # the SDK's authorizer client, with its own token handling
    client = peer.client(OA)
    followers = client.user.get_followers()
    assert followers["total"] == 3
    client.message.send_text(followers["data"]["openid"][0], "hello")
    client.menu.create({"button": [{"type": "click", "name": "Hi", "key": "HI"}]})
    assert client.menu.get()["menu"]["button"][0]["key"] == "HI"
    ticket = client.jsapi.get_jsapi_ticket()
    assert ticket == client.jsapi.get_ticket()["ticket"]
    uploaded = client.media.upload("image", ("logo.png", b"\x89PNG-bytes", "image/png"))
    assert client.media.download(uploaded["media_id"]).content == b"\x89PNG-bytes"
    assert control.get("/messages").json()["messages"][0]["message"]["text"] == {"content": "hello"}


def test_wechatpy_renews_an_expired_component_token_and_retries(peer: Peer) -> None:
    control, component = peer.control, peer.component
    control.post(f"/components/{RETAIL.appid}/push-ticket").raise_for_status()
    feed(peer)
    assert component.get_authorizer_list()["total_count"] == 0

    control.post("/expire", json={"what": "component"}).raise_for_status()
    control.post("/counters/reset").raise_for_status()
    assert component.get_authorizer_list()["total_count"] == 0  # 42001, a new token, then the retry
    counters = control.get("/counters").json()
    assert counters["api_get_authorizer_list"]["total"] == 2
    assert counters["api_component_token"]["total"] == 1


def test_wechatpy_sees_61023_after_revocation(peer: Peer) -> None:
    control, component = peer.control, peer.component
    control.post(f"/components/{RETAIL.appid}/push-ticket").raise_for_status()
    feed(peer)
    seeded = {"authorizer_appid": MP, "kind": "mini_program", "nick_name": "Shop", "principal_name": "ACME"}
    refresh = control.post("/authorizers", json=seeded | {"components": {RETAIL.appid: [17]}}).json()
    control.post("/authorizations/revoke", json={"component_appid": RETAIL.appid, "authorizer_appid": MP})
    with pytest.raises(WeChatClientException) as refused:
        component.refresh_authorizer_token(MP, refresh["refresh_tokens"][RETAIL.appid])
    assert refused.value.errcode == 61023

"""``/wx`` calls without a body, answered in front of Litestar (`gateway.http.fast_lane`): the same answers
as the route gives, on SQLite and PostgreSQL, and every other request left to the route."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from gateway.http import fast_lane
from tests.conftest import CLIENT_KEYS
from tests.support.world import MINI, OA, World
from tests.test_proxy import gateway_token

# A GET that announces an empty body is one the lane leaves to the controller (the route reads no body
# either way).
TO_THE_ROUTE = {"Content-Length": "0"}


class Taken:
    """Counts the calls the lane forwarded itself."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = fast_lane._no_body

        def counted() -> Any:
            self.count += 1
            return original()

        monkeypatch.setattr(fast_lane, "_no_body", counted)


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> Taken:
    return Taken(monkeypatch)


def comparable(response: httpx.Response) -> tuple[int, bytes, list[tuple[str, str]]]:
    """Status, body and headers, but what differs on every call (request id, upstream date, WeChat's
    ``rid``)."""
    assert response.headers["x-request-id"]
    varying = ("x-request-id", "date")
    return (
        response.status_code,
        re.sub(rb"rid: [0-9a-f-]+", b"rid: -", response.content),
        sorted((k, v) for k, v in response.headers.items() if k not in varying),
    )


async def both_ways(world: World, taken: Taken, url: str, **kwargs: Any) -> httpx.Response:
    """GET ``url`` through the lane, then through the controller; the two answers must be the same."""
    before = taken.count
    in_lane = await world.gateway.get(url, **kwargs)
    assert taken.count == before + 1, "the lane did not take the call"
    headers = {**kwargs.pop("headers", {}), **TO_THE_ROUTE}
    routed = await world.gateway.get(url, headers=headers, **kwargs)
    assert taken.count == before + 1, "the lane took a call with a body"
    assert comparable(in_lane) == comparable(routed)
    return in_lane


async def test_a_call_is_answered_exactly_as_the_route_answers_it(ready: World, taken: Taken) -> None:
    token = await gateway_token(ready)
    users = await both_ways(ready, taken, "/wx/cgi-bin/user/get", params={"access_token": token})
    assert users.status_code == 200 and users.json()["total"] >= 1
    # The same with a bearer key and the authorizer in a header.
    await both_ways(
        ready,
        taken,
        "/wx/cgi-bin/user/get",
        headers={"Authorization": f"Bearer {CLIENT_KEYS['crm']}", "X-Authorizer-Appid": OA},
    )
    # A trailing slash, which Litestar's router drops, is the same call.
    await both_ways(ready, taken, "/wx/cgi-bin/user/get/", params={"access_token": token})
    assert await ready.calls("user/get") == 6


@pytest.mark.parametrize(
    "params",
    [
        {},  # no credential
        {"access_token": "not-a-gateway-token"},
        {"access_token": "", "x": "%E4%BD%A0"},  # blank, and escaped: the query read as Litestar reads it
    ],
)
async def test_refusals_are_worded_as_the_route_words_them(
    ready: World, taken: Taken, params: dict[str, str]
) -> None:
    refused = await both_ways(ready, taken, "/wx/cgi-bin/user/get", params=params)
    assert refused.json()["errcode"] not in (None, 0)


async def test_wechats_errors_and_statuses_pass_through_alike(ready: World, taken: Taken) -> None:
    token = await gateway_token(ready)
    await ready.fault(endpoint="user/get", errcode=45009, times=2)
    throttled = await both_ways(ready, taken, "/wx/cgi-bin/user/get", params={"access_token": token})
    assert throttled.json()["errcode"] == 45009
    await ready.fault(endpoint="user/get", http_status=503, times=2)
    failed = await both_ways(ready, taken, "/wx/cgi-bin/user/get", params={"access_token": token})
    assert failed.status_code == 503


async def test_a_streamed_answer_is_the_same_both_ways(ready: World, taken: Taken) -> None:
    await ready.authorize("finance", OA, [11, 15])  # the media APIs are served by finance
    token = await gateway_token(ready)
    image = bytes(range(256)) * 2000  # 512 KB: streamed, not read whole
    uploaded = await ready.gateway.post(
        "/wx/cgi-bin/media/upload",
        params={"access_token": token, "type": "image"},
        files={"media": ("photo.jpg", image, "image/jpeg")},
    )
    media_id = uploaded.json()["media_id"]
    media = await both_ways(
        ready, taken, "/wx/cgi-bin/media/get", params={"access_token": token, "media_id": media_id}
    )
    assert media.content == image and media.headers["content-type"] == "image/jpeg"


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("POST", "/wx/cgi-bin/user/get", {}),  # another method
        ("GET", "/wx/cgi-bin/token", {}),  # the token route
        ("GET", "/wx/component/retail/cgi-bin/component/api_get_authorizer_list", {}),  # component route
        ("GET", "/wx/cgi-bin/%2E%2E/user/get", {}),  # a dot segment: the route refuses it
        ("GET", "/wx/cgi-bin/user/get", {"Host": "gateway test"}),  # a Host Litestar judges
        ("GET", "/wx/cgi-bin/user/get", {"Transfer-Encoding": "chunked"}),  # a body
    ],
)
async def test_other_requests_are_left_to_litestar(
    ready: World, taken: Taken, method: str, path: str, headers: dict[str, str]
) -> None:
    await ready.gateway.request(method, path, headers=headers)
    assert taken.count == 0


async def test_calls_are_counted_under_the_routes_template(ready: World, taken: Taken) -> None:
    token = await gateway_token(ready)
    await both_ways(ready, taken, "/wx/cgi-bin/user/get", params={"access_token": token})
    metrics = (await ready.gateway.get("/metrics")).text
    line = 'gateway_http_requests_total{method="GET",route="/wx/{api}",status="200"} 2.0'
    assert line in metrics


async def test_logins_and_user_token_calls_are_the_same_both_ways(ready: World, taken: Taken) -> None:
    await ready.authorize("retail", MINI, [17], kind="mini_program")
    code = (await ready.sim.post("/sim/login-codes", json={"authorizer_appid": MINI})).json()
    params = {
        "appid": MINI,
        "secret": CLIENT_KEYS["crm"],
        "js_code": code["code"],
        "grant_type": "authorization_code",
    }
    session = await ready.gateway.get("/wx/sns/jscode2session", params=params)
    assert taken.count == 1  # the lane sent the login itself, as the component call
    assert session.json()["openid"] == code["openid"]
    refused = await both_ways(ready, taken, "/wx/sns/jscode2session", params=params | {"secret": "nope"})
    assert refused.json()["errcode"] == 40125
    used = await both_ways(ready, taken, "/wx/sns/jscode2session", params=params)  # WeChat: code been used
    assert used.json()["errcode"] == 40163
    user = {"access_token": "not-a-user-token", "openid": "o1"}
    assert (await both_ways(ready, taken, "/wx/sns/userinfo", params=user)).json()["errcode"] == 40001


async def test_stable_token_is_left_to_its_route(ready: World, taken: Taken) -> None:
    response = await ready.gateway.get("/wx/cgi-bin/stable_token")
    assert taken.count == 0
    assert (response.status_code, response.json()["errcode"]) == (200, 43002)

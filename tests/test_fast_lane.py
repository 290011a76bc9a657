"""Every fast route held to its controller (`gateway.http.fast_lane`): each route of the lane's table is a
route of the app, and a request the lane answers gets the very answer the controller gives.

The per-route details (refusals, shapes left to Litestar, streaming, disconnects) are in
``test_fast_lane_tokens.py``, ``test_fast_lane_wx.py`` and ``test_fast_lane_pushes.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import httpx
import pytest

from gateway.http import fast_lane
from tests.conftest import CLIENT_KEYS
from tests.support.world import OA, World
from tests.test_event_intake import ticket_xml, wechatpy_push
from tests.test_fast_lane_wx import comparable
from tests.test_proxy import gateway_token

# What only the lane calls to answer: one of these answers every request it takes.
_LANE_ANSWERS = ("_json", "_success", "_refusal", "answer")


class Taken:
    """Counts the requests the lane answered."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        for name in _LANE_ANSWERS:
            monkeypatch.setattr(fast_lane, name, self._counting(getattr(fast_lane, name)))

    def _counting(self, original: Any) -> Any:
        if getattr(original, "__name__", "") == "_success":  # an ASGI app itself

            async def counted_app(*args: Any) -> Any:
                self.count += 1
                return await original(*args)

            return counted_app

        def counted(*args: Any) -> Any:
            self.count += 1
            return original(*args)

        return counted


class Example(NamedTuple):
    """A request of a fast route, by what it needs from the world; and the header that sends the same
    request to the controller instead (the lane leaves requests with a body framing to Litestar)."""

    build: Callable[[World, str], Any]
    to_the_controller: dict[str, str]


def _bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {CLIENT_KEYS['crm']}"}


async def _token_request(world: World, nonce: str, kind: str) -> httpx.Request:
    return world.gateway.build_request("GET", f"/v1/authorizers/{OA}/{kind}", headers=_bearer())


async def _wx_request(world: World, nonce: str) -> httpx.Request:
    token = await gateway_token(world)
    return world.gateway.build_request("GET", "/wx/cgi-bin/user/get", params={"access_token": token})


async def _push_request(world: World, nonce: str, path: str) -> httpx.Request:
    query, body = wechatpy_push("retail", ticket_xml("retail"), nonce=nonce)
    return world.gateway.build_request("POST", path, params=query, content=body)


EXAMPLES: dict[tuple[str, str], Example] = {
    ("GET", "/v1/authorizers/{appid}/access-token"): Example(
        lambda w, n: _token_request(w, n, "access-token"), {"Content-Length": "0"}
    ),
    ("GET", "/v1/authorizers/{appid}/jsapi-ticket"): Example(
        lambda w, n: _token_request(w, n, "jsapi-ticket"), {"Content-Length": "0"}
    ),
    ("GET", "/wx/{api}"): Example(_wx_request, {"Content-Length": "0"}),
    ("POST", "/wechat/{platform}/events"): Example(
        lambda w, n: _push_request(w, n, "/wechat/retail/events"), {"Transfer-Encoding": "chunked"}
    ),
    ("POST", "/wechat/events"): Example(
        lambda w, n: _push_request(w, n, "/wechat/events"), {"Transfer-Encoding": "chunked"}
    ),
}


def test_every_fast_route_has_an_example() -> None:
    assert set(EXAMPLES) == set(fast_lane.FAST_ROUTES)


@pytest.mark.parametrize("route", fast_lane.FAST_ROUTES, ids=lambda r: " ".join(r))
async def test_a_fast_route_answers_as_its_controller(
    ready: World, monkeypatch: pytest.MonkeyPatch, route: tuple[str, str]
) -> None:
    method, template = route
    example = EXAMPLES[route]
    request = await example.build(ready, "1")
    assert request.method == method
    taken = Taken(monkeypatch)
    in_lane = await ready.gateway.send(request)
    # Taken: Litestar's router found the controller's route under the table's template (a renamed path
    # would leave the lane a dead entry, and its requests on the slow path).
    assert taken.count == 1, f"the lane did not take {template}"
    twin = await example.build(ready, "2")
    twin.headers.update(example.to_the_controller)
    routed = await ready.gateway.send(twin)
    assert taken.count == 1, "the lane took a request it leaves to the controller"
    assert in_lane.status_code == 200, in_lane.text
    assert comparable(in_lane) == comparable(routed)

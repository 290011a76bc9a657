"""The authorization event URL received in front of Litestar (`gateway.http.fast_lane`): the same answers
as the route, for every push it takes, and every other request left to the route."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.callbacks.intake import MAX_PUSH_BYTES
from gateway.http import fast_lane
from tests.test_event_intake import HOSTILE, Harness, harness, ticket_xml, wechatpy_push

__all__ = ["harness"]  # the fixture, shared with the route's own tests


class Taken:
    """Counts the pushes the lane received itself (only it reads a body with `_read_body`)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original: Callable[..., Awaitable[bytes | None]] = fast_lane._read_body

        async def counted(*args: Any) -> bytes | None:
            self.count += 1
            return await original(*args)

        monkeypatch.setattr(fast_lane, "_read_body", counted)


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> Taken:
    return Taken(monkeypatch)


# A request announcing a chunked body is one the lane leaves to the controller (Litestar frames it).
TO_THE_ROUTE = {"Transfer-Encoding": "chunked"}


def comparable(response: httpx.Response) -> tuple[int, bytes, list[tuple[str, str]]]:
    """Status, body and headers, but the request id (another on each request), which must be there."""
    assert response.headers["x-request-id"]
    headers = sorted((k, v) for k, v in response.headers.items() if k != "x-request-id")
    return response.status_code, response.content, headers


async def test_a_push_is_received_and_answered_exactly_as_the_route_answers_it(
    harness: Harness, taken: Taken
) -> None:
    in_lane = wechatpy_push("retail", ticket_xml("retail", "ticket@@@1"), nonce="1")
    routed = wechatpy_push("retail", ticket_xml("retail", "ticket@@@2"), nonce="2")
    first = await harness.client.post("/wechat/retail/events", params=in_lane[0], content=in_lane[1])
    assert taken.count == 1
    second = await harness.client.post(
        "/wechat/retail/events", params=routed[0], content=routed[1], headers=TO_THE_ROUTE
    )
    assert taken.count == 1
    assert comparable(first) == comparable(second)
    assert (first.status_code, first.text) == (200, "success")
    assert await harness.counts() == (0, 1)
    stored = await harness.store.ticket("retail")
    assert stored is not None and stored.ticket == "ticket@@@2"
    # The shared URL too, the platform found by the envelope's AppId.
    shared = wechatpy_push("retail", ticket_xml("retail", "ticket@@@3"), nonce="3")
    third = await harness.client.post("/wechat/events", params=shared[0], content=shared[1])
    assert taken.count == 2
    assert comparable(third) == comparable(first)
    stored = await harness.store.ticket("retail")
    assert stored is not None and stored.ticket == "ticket@@@3"


@pytest.mark.parametrize("case", HOSTILE.values(), ids=HOSTILE.keys())
async def test_every_refusal_is_worded_as_the_route_words_it(
    harness: Harness, taken: Taken, case: tuple[str, dict[str, str], bytes, int, str]
) -> None:
    path, query, body, status, code = case
    in_lane = 0 if len(body) > MAX_PUSH_BYTES else 1  # a body over the limit is Litestar's to refuse
    refused = await harness.client.post(path, params=query, content=body)
    assert taken.count == in_lane
    routed = await harness.client.post(path, params=query, content=body, headers=TO_THE_ROUTE)
    assert taken.count == in_lane
    assert comparable(refused) == comparable(routed)
    assert (refused.status_code, refused.json()["error"]["code"]) == (status, code)
    assert await harness.counts() == (0, 0)


@pytest.mark.parametrize(
    "extra",
    [
        "&nonce=9&msg_signature=" + "0" * 40,  # a name given twice: the first value counts
        "&encrypt_type=",  # blank
        "&encrypt_type=raw&encrypt_type=aes",
        "&x=%E4%BD%A0&timestamp=%FF",
        "&&flag&=x&a=b=c",  # empty fields, a name alone, an empty name, a value with "="
    ],
)
async def test_a_query_is_read_as_the_route_reads_it(harness: Harness, taken: Taken, extra: str) -> None:
    query, body = wechatpy_push("retail", ticket_xml("retail"))
    url = f"/wechat/retail/events?{httpx.QueryParams(query)}{extra}"
    in_lane = await harness.client.post(url, content=body)
    assert taken.count == 1
    routed = await harness.client.post(url, content=body, headers=TO_THE_ROUTE)
    assert taken.count == 1
    assert comparable(in_lane) == comparable(routed)


@settings(max_examples=500)
@given(st.lists(st.sampled_from(["a", "b", "=", "&", ";", "é", "%41", "+", "%", "==", "&&"]), max_size=12))
def test_the_query_is_parsed_as_parse_qsl_parses_it(parts: list[str]) -> None:
    """The lane reads a query without escapes itself: the same as parse_qsl, which Litestar uses."""
    raw = "".join(parts).encode("latin-1")
    expected: dict[str, str] = {}
    for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True, separator="&"):
        expected.setdefault(name, value)
    assert fast_lane._first_values(fast_lane.query_pairs(raw)) == expected


async def test_pushes_are_counted_under_the_routes_templates(harness: Harness, taken: Taken) -> None:
    for nonce, path in (("1", "/wechat/retail/events"), ("2", "/wechat/events")):
        query, body = wechatpy_push("retail", ticket_xml("retail"), nonce=nonce)
        assert (await harness.client.post(path, params=query, content=body)).status_code == 200
    refused = wechatpy_push("retail", ticket_xml("retail"), nonce="3")
    await harness.client.post(
        "/wechat/retail/events", params={**refused[0], "nonce": "4"}, content=refused[1]
    )
    assert taken.count == 3
    metrics = (await harness.client.get("/metrics")).text
    for line in (
        'gateway_http_requests_total{method="POST",route="/wechat/{platform}/events",status="200"} 1.0',
        'gateway_http_requests_total{method="POST",route="/wechat/events",status="200"} 1.0',
        'gateway_http_requests_total{method="POST",route="/wechat/{platform}/events",status="403"} 1.0',
    ):
        assert line in metrics


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("PUT", "/wechat/retail/events", {}),
        ("POST", "/wechat/retail/x/events", {}),
        ("POST", "/wechat/retail/events", {"Host": "bad host"}),
    ],
)
async def test_other_shapes_go_to_the_app(
    harness: Harness, taken: Taken, method: str, path: str, headers: dict[str, str]
) -> None:
    query, body = wechatpy_push("retail", ticket_xml("retail"))
    await harness.client.request(method, path, params=query, content=body, headers=headers)
    assert taken.count == 0


@pytest.mark.parametrize("path", ["/wechat/retail/events/", "/wechat//events"])
async def test_paths_litestar_normalises_are_answered_as_the_route_answers_them(
    harness: Harness, taken: Taken, path: str
) -> None:
    query, body = wechatpy_push("retail", ticket_xml("retail"))
    in_lane = await harness.client.post(path, params=query, content=body)
    assert taken.count == 1
    routed = await harness.client.post(path, params=query, content=body, headers=TO_THE_ROUTE)
    assert taken.count == 1
    assert comparable(in_lane) == comparable(routed)
    assert in_lane.status_code == 200


async def test_a_client_gone_before_its_body_is_not_answered_and_nothing_is_stored(harness: Harness) -> None:
    query, body = wechatpy_push("retail", ticket_xml("retail"))
    messages = [{"type": "http.request", "body": body[:10], "more_body": True}, {"type": "http.disconnect"}]
    sent: list[object] = []

    async def receive() -> Any:
        return messages.pop(0)

    async def send(message: object) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/wechat/retail/events",
        "raw_path": b"/wechat/retail/events",
        "root_path": "",
        "query_string": str(httpx.QueryParams(query)).encode(),
        "headers": [(b"host", b"gateway"), (b"content-length", b"%d" % len(body))],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    app = harness.client.app
    await app(scope, receive, send)  # type: ignore[arg-type]
    assert sent == []
    assert await harness.counts() == (0, 0)


async def test_verify_tickets_log_at_debug_and_authorization_events_at_info(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.callbacks.intake")
    query, body = wechatpy_push("retail", ticket_xml("retail"), nonce="1")
    assert (await harness.client.post("/wechat/retail/events", params=query, content=body)).text == "success"
    revoked = (
        "<xml><AppId>wxc0mp000000001</AppId><CreateTime>1</CreateTime><InfoType>unauthorized</InfoType>"
        "<AuthorizerAppid>wxa0000000000001</AuthorizerAppid></xml>"
    )
    query, body = wechatpy_push("retail", revoked, nonce="2")
    assert (await harness.client.post("/wechat/retail/events", params=query, content=body)).text == "success"
    accepted = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "gateway.callbacks.intake"]
    assert accepted == [
        (logging.DEBUG, "push accepted platform=retail info_type=component_verify_ticket applied=True"),
        (logging.INFO, "push accepted platform=retail info_type=unauthorized applied=True"),
    ]

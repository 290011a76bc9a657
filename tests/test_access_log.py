"""The access log: one JSON line per request (``GATEWAY_ACCESS_LOG=all``; by default only
refusals) on ``gateway.access`` — client, route template, method,
status, duration, request id — for answers and refusals alike, from every lane (the token lane in front of
Litestar, the routes, unmatched paths), and never a key or token, whether it came in a header or a query."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from gateway.crypto import SecretBox
from gateway.observability.logs import configure_logging
from gateway.registry.model import Registry
from tests.conftest import CLIENT_KEYS, make_settings
from tests.support.world import OA, World, open_world

TOKEN_ROUTE = "/v1/authorizers/{appid}/access-token"


@pytest.fixture
async def world(registry: Registry, database_url: str, secret_box: SecretBox) -> AsyncIterator[World]:
    """The world of `ready`, every request logged (``GATEWAY_ACCESS_LOG=all``)."""
    settings = msgspec.structs.replace(make_settings(database_url, secret_box), access_log="all")
    async with open_world(registry, database_url, secret_box, settings=settings) as opened:
        yield opened


@pytest.fixture
def stream() -> io.StringIO:
    out = io.StringIO()
    configure_logging("INFO", "json", out)
    return out


def access_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [line for line in lines if line["logger"] == "gateway.access"]


def line_of(stream: io.StringIO, request_id: str) -> dict[str, Any]:
    (line,) = [line for line in access_lines(stream) if line.get("request_id") == request_id]
    return line


async def test_every_answer_and_refusal_has_one_line(ready: World, stream: io.StringIO) -> None:
    issued = await ready.token(OA)  # the token lane, in front of Litestar
    assert issued.status_code == 200
    line = line_of(stream, issued.headers["x-request-id"])
    assert {k: line[k] for k in ("client", "route", "method", "status", "level")} == {
        "client": "crm",
        "route": TOKEN_ROUTE,
        "method": "GET",
        "status": 200,
        "level": "info",
    }
    assert line["event"] == f"GET {TOKEN_ROUTE} 200"
    assert 0 < line["duration_s"] < 10

    wrong_key = await ready.gateway.get(
        f"/v1/authorizers/{OA}/access-token", headers={"Authorization": "Bearer not-a-key-at-all"}
    )
    assert wrong_key.status_code == 401
    refused = line_of(stream, wrong_key.headers["x-request-id"])
    assert (refused["route"], refused["status"]) == (TOKEN_ROUTE, 401)
    assert refused["client"] == "127.0.0.1"  # no client admitted: the peer's address

    listed = await ready.gateway.get(
        "/v1/audit-log", headers={"Authorization": f"Bearer {CLIENT_KEYS['ops']}"}
    )  # a Litestar route, the client admitted by its guard
    assert (line_of(stream, listed.headers["x-request-id"])["client"], listed.status_code) == ("ops", 200)

    nowhere = await ready.gateway.post("/nowhere/at/all", headers={"X-Request-Id": "lb-42"})
    assert nowhere.status_code in (404, 405)
    lost = line_of(stream, "lb-42")
    assert (lost["route"], lost["method"], lost["status"]) == ("unmatched", "POST", nowhere.status_code)


async def test_no_key_or_token_reaches_the_access_log(ready: World, stream: io.StringIO) -> None:
    key = CLIENT_KEYS["crm"]
    issued = await ready.gateway.get(
        "/wx/cgi-bin/token", params={"grant_type": "client_credential", "appid": OA, "secret": key}
    )
    gateway_token = issued.json()["access_token"]
    called = await ready.gateway.get(
        "/wx/cgi-bin/get_current_selfmenu_info", params={"access_token": gateway_token}
    )
    assert called.status_code == 200
    await ready.gateway.get(f"/v1/authorizers/{OA}/access-token", headers={"Authorization": f"Bearer {key}"})
    text = stream.getvalue()
    lines = access_lines(stream)
    assert len(lines) == 3
    assert {line["route"] for line in lines} >= {"/wx/cgi-bin/token", TOKEN_ROUTE}
    # The /wx proxy's callers are named too: by their key (cgi-bin/token) or their gateway token (a call).
    assert [(line["route"], line["client"]) for line in lines] == [
        ("/wx/cgi-bin/token", "crm"),
        ("/wx/{api}", "crm"),
        (TOKEN_ROUTE, "crm"),
    ]
    bad = await ready.gateway.get("/wx/cgi-bin/get_current_selfmenu_info", params={"access_token": "gw_nope"})
    assert line_of(stream, bad.headers["x-request-id"])["client"] == "127.0.0.1"  # not identified
    for secret in (key, gateway_token, OA):  # nor the raw path: an appid is a template's {appid}
        assert secret not in json.dumps(lines)
    assert key not in text and gateway_token not in text


async def test_by_default_only_refusals_are_logged(
    registry: Registry, sqlite_url: str, secret_box: SecretBox, stream: io.StringIO
) -> None:
    async with open_world(
        registry, sqlite_url, secret_box, settings=make_settings(sqlite_url, secret_box)
    ) as world:
        answered = await world.gateway.get("/healthz")
        refused = await world.gateway.get(f"/v1/authorizers/{OA}/access-token")
        failed = await world.gateway.get("/nowhere")
    assert (answered.status_code, refused.status_code, failed.status_code) == (200, 401, 404)
    assert [(line["route"], line["status"]) for line in access_lines(stream)] == [
        (TOKEN_ROUTE, 401),
        ("unmatched", 404),
    ]


async def test_the_access_log_can_be_turned_off(
    registry: Registry, sqlite_url: str, secret_box: SecretBox, stream: io.StringIO
) -> None:
    settings = msgspec.structs.replace(make_settings(sqlite_url, secret_box), access_log="off")
    async with open_world(registry, sqlite_url, secret_box, settings=settings) as world:
        response = await world.gateway.get("/healthz")
        refused = await world.gateway.get(f"/v1/authorizers/{OA}/access-token")
    assert (response.status_code, refused.status_code) == (200, 401)
    assert access_lines(stream) == []

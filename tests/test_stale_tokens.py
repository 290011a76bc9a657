"""Dead tokens: a re-authorization replaces the stored token, callers report stale ones (``?stale=``), and
reports renew once per stale value, spaced, never blacked out (SPEC §4, §7)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from gateway.credentials.tokens import STALE_RENEWAL_SPACING_S
from gateway.crypto import SecretBox
from gateway.http.app import create_app
from gateway.registry.model import Registry
from gateway.wechat.client import BoundClient
from tests.conftest import CLIENT_KEYS, make_settings
from tests.support.asgi import LateASGITransport, running
from tests.support.flows import push_ticket
from tests.support.world import OA, RETAIL, World, open_world

KINDS = [
    ("access-token", "access_token", "api_authorizer_token"),
    ("jsapi-ticket", "ticket", "ticket/getticket"),
]


def bearer(client: str = "crm") -> dict[str, str]:
    return {"Authorization": f"Bearer {CLIENT_KEYS[client]}"}


async def vend(
    gateway: httpx.AsyncClient, kind: str = "access-token", stale: str | None = None, client: str = "crm"
) -> httpx.Response:
    params = {} if stale is None else {"stale": stale}
    return await gateway.get(f"/v1/authorizers/{OA}/{kind}", headers=bearer(client), params=params)


async def current(world: World, kind: str = "access-token", stale: str | None = None) -> str:
    response = await vend(world.gateway, kind, stale)
    assert response.status_code == 200, response.text
    value: str = response.json()["ticket" if kind == "jsapi-ticket" else "access_token"]
    return value


async def errcode_at_wechat(world: World, token: str) -> int:
    """What the simulator answers a call (user/get) made with ``token``: 0 when it works."""
    answer = await world.sim.get("/cgi-bin/user/get", params={"access_token": token})
    errcode: int = answer.json().get("errcode", 0)
    return errcode


async def gateway_token(world: World) -> str:
    response = await world.gateway.get(
        "/wx/cgi-bin/token",
        params={"grant_type": "client_credential", "appid": OA, "secret": CLIENT_KEYS["crm"]},
    )
    token: str = response.json()["access_token"]
    return token


async def proxied_user_get(world: World, gateway_token: str) -> dict[str, Any]:
    answer = await world.gateway.get("/wx/cgi-bin/user/get", params={"access_token": gateway_token})
    body: dict[str, Any] = answer.json()
    return body


# --- re-authorization ---------------------------------------------------------------------------------


async def test_a_reauthorization_hands_out_the_new_token_at_once(ready: World) -> None:
    sdk = await gateway_token(ready)
    old = await current(ready)
    assert await current(ready) == old  # in memory now, for the fast lane too
    assert await errcode_at_wechat(ready, old) == 0
    assert (await proxied_user_get(ready, sdk)).get("total")

    # The administrator authorizes again, with one more set (updateauthorized): WeChat kills the old
    # token at once and api_query_auth answers a new one, which the gateway keeps.
    await ready.authorize("retail", OA, [1, 2, 24, 15])
    assert await errcode_at_wechat(ready, old) == 40001
    await ready.reset_counters()

    new = await current(ready)
    assert new != old
    assert await current(ready) == new  # and from memory
    assert await errcode_at_wechat(ready, new) == 0
    assert (await proxied_user_get(ready, sdk)).get("total")
    # No 40001 met on the way, nothing renewed: the token api_query_auth returned is the one served.
    assert await ready.calls("api_authorizer_token") == 0
    assert await ready.calls("user/get") == 2  # ours above, and the proxied call sent once


async def test_a_reauthorization_known_from_the_redirect_alone_hands_out_the_new_token(ready: World) -> None:
    old = await current(ready)
    link = (
        await ready.gateway.post(
            "/v1/platforms/retail/authorization-links", json={}, headers=bearer("onboarding")
        )
    ).json()
    query = dict(parse_qsl(urlsplit(link["pc_url"]).query))
    # The same sets again: WeChat pushes nothing (no updateauthorized), but the old token dies.
    body = {"authorizer_appid": OA, "func_ids": [1, 2, 24], "redirect_uri": query["redirect_uri"]}
    approval = (
        await ready.sim.post(f"/sim/pre-auth-codes/{query['pre_auth_code']}/approve", json=body)
    ).json()
    assert approval["push"] is None
    assert await errcode_at_wechat(ready, old) == 40001
    redirect = urlsplit(approval["redirect_url"])
    assert (await ready.gateway.get(f"{redirect.path}?{redirect.query}")).status_code == 200
    new = await current(ready)
    assert new != old
    assert await errcode_at_wechat(ready, new) == 0


async def test_a_renewal_in_flight_during_the_reauthorization_does_not_overwrite_the_new_token(
    ready: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = await current(ready)
    await ready.services.tokens.forget_authorizer("retail", OA)  # the next request fetches one
    fetch, fetched, answer = BoundClient.authorizer_token, asyncio.Event(), asyncio.Event()

    async def answered_late(self: BoundClient, *args: Any) -> Any:
        token = await fetch(self, *args)  # minted at WeChat now, before the re-authorization ...
        fetched.set()
        await answer.wait()  # ... its answer arriving after it
        return token

    monkeypatch.setattr(BoundClient, "authorizer_token", answered_late)
    fetching = asyncio.create_task(vend(ready.gateway))
    await fetched.wait()
    await ready.authorize("retail", OA, [1, 2, 24, 15])  # kills the token just minted
    answer.set()
    answered = (await fetching).json()["access_token"]
    assert answered == await current(ready) != old
    assert await errcode_at_wechat(ready, answered) == 0


# --- ?stale= ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "field", "endpoint"), KINDS)
async def test_a_stale_report_of_the_current_value_renews_it_once(
    ready: World, kind: str, field: str, endpoint: str
) -> None:
    stale = await current(ready, kind)
    await ready.reset_counters()
    reports = await asyncio.gather(*(vend(ready.gateway, kind, stale) for _ in range(20)))
    assert {r.status_code for r in reports} == {200}
    assert len({r.json()[field] for r in reports}) == 1
    assert await ready.calls(endpoint) == 1
    if kind == "access-token":
        renewed = reports[0].json()[field]
        assert renewed != stale
        assert await errcode_at_wechat(ready, renewed) == 0
    # Later reports of the value already replaced: the current one, nothing renewed.
    again = await asyncio.gather(*(vend(ready.gateway, kind, stale) for _ in range(5)))
    assert {r.json()[field] for r in again} == {reports[0].json()[field]}
    assert await ready.calls(endpoint) == 1


@pytest.mark.parametrize("kind", ["access-token", "jsapi-ticket"])
async def test_a_report_of_another_value_answers_the_current_one_without_renewal(
    ready: World, kind: str
) -> None:
    value = await current(ready, kind)
    await ready.reset_counters()
    for other in ("garbage", "x" * 512, value[:-1], value + "A"):
        assert await current(ready, kind, stale=other) == value
    assert await current(ready, kind, stale="") == value  # empty: no report
    counters = await ready.counters()
    assert "api_authorizer_token" not in counters
    assert "ticket/getticket" not in counters


@pytest.mark.parametrize("kind", ["access-token", "jsapi-ticket"])
@pytest.mark.parametrize("bad", ["x" * 513, "a\x01b", "token with spaces", "t\u00f6ken"])
async def test_a_value_not_shaped_like_a_token_is_422_naming_stale(ready: World, kind: str, bad: str) -> None:
    await current(ready, kind)
    await ready.reset_counters()
    response = await vend(ready.gateway, kind, bad)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"].startswith("stale:")
    assert bad not in response.text
    assert await ready.counters() == {}


@pytest.mark.parametrize("kind", ["access-token", "jsapi-ticket"])
async def test_scopes_and_authorizer_lists_still_hold_with_a_report(ready: World, kind: str) -> None:
    value = await current(ready, kind)
    await ready.reset_counters()
    outside = await ready.gateway.get(
        f"/v1/authorizers/{OA.replace('a', 'b', 1)}/{kind}",
        headers=bearer("limited"),
        params={"stale": value},
    )
    assert (outside.status_code, outside.json()["error"]["code"]) == (403, "forbidden")
    for client, stale in (("audit", value), ("audit", "x" * 600)):  # no token scope: 403 before the shape
        refused = await vend(ready.gateway, kind, stale, client=client)
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")
    unknown = await ready.gateway.get(f"/v1/authorizers/{OA}/{kind}", params={"stale": value})
    assert unknown.status_code == 401
    assert await ready.counters() == {}


async def test_the_reported_value_reaches_no_log_and_no_audit_record(
    ready: World, caplog: pytest.LogCaptureFixture
) -> None:
    stale = await current(ready)
    caplog.set_level(logging.DEBUG)
    renewed = await current(ready, stale=stale)
    await vend(ready.gateway, stale="y" * 600)
    assert renewed != stale
    await ready.services.audit.flush()
    records = await ready.services.store.audit.recent(authorizer_appid=OA)
    assert records
    assert stale not in str(records)
    assert "y" * 600 not in str(records)
    assert stale not in caplog.text
    assert "y" * 600 not in caplog.text


async def test_the_openapi_document_lists_stale_without_an_example(ready: World) -> None:
    schema = (await ready.gateway.get("/schema/openapi.json")).json()
    for route in ("access-token", "jsapi-ticket"):
        operation = schema["paths"][f"/v1/authorizers/{{appid}}/{route}"]["get"]
        (stale,) = [p for p in operation["parameters"] if p["name"] == "stale"]
        assert stale["in"] == "query"
        assert stale["required"] is False
        assert stale["schema"]["maxLength"] == 512
        assert "example" not in str(stale)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # replicas share PostgreSQL
async def test_reports_on_two_replicas_renew_once(
    ready: World, registry: Registry, database_url: str, secret_box: SecretBox
) -> None:
    sim_app = ready.sim._transport.app  # type: ignore[attr-defined]
    second = create_app(
        make_settings(database_url, secret_box),
        registry,
        transport=LateASGITransport(sim_app),
        background=False,
    )
    async with running(second) as other:
        stale = await current(ready)
        assert (await vend(other)).json()["access_token"] == stale
        await ready.reset_counters()
        reports = await asyncio.gather(
            *(vend(ready.gateway, stale=stale) for _ in range(20)),
            *(vend(other, stale=stale) for _ in range(20)),
        )
        assert {r.status_code for r in reports} == {200}
        assert len({r.json()["access_token"] for r in reports}) == 1
        assert await ready.calls("api_authorizer_token") == 1
        # Either replica, later: the value already replaced answers the current one.
        assert (await vend(other, stale=stale)).json() == reports[0].json()
        assert await ready.calls("api_authorizer_token") == 1


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # replicas share PostgreSQL
async def test_another_replica_serves_the_new_token_on_a_report_or_after_its_memory_lapses(
    ready: World, registry: Registry, database_url: str, secret_box: SecretBox
) -> None:
    sim_app = ready.sim._transport.app  # type: ignore[attr-defined]
    ahead = [0.0]
    second = create_app(
        make_settings(database_url, secret_box),
        registry,
        transport=LateASGITransport(sim_app),
        background=False,
        clock=lambda: time.time() + ahead[0],
    )
    async with running(second) as other:
        old = (await vend(other)).json()["access_token"]
        assert (await vend(other)).json()["access_token"] == old  # in the second replica's memory
        await ready.authorize("retail", OA, [1, 2, 24, 15])  # acted upon by the first replica
        new = await current(ready)
        assert new != old
        await ready.reset_counters()
        # The second replica's memory holds the old token for up to 5 s; a caller that met 40001 with
        # it and says so gets the new one at once, without a renewal.
        assert (await vend(other, stale=old)).json()["access_token"] == new
        ahead[0] += 5.5
        assert (await vend(other)).json()["access_token"] == new
        assert await ready.calls("api_authorizer_token") == 0


# --- the spacing between renewals of one key ----------------------------------------------------------


@pytest.fixture
async def shifted(
    registry: Registry, database_url: str, secret_box: SecretBox
) -> AsyncIterator[tuple[World, list[float]]]:
    """``ready``'s world on a gateway clock the test moves forward: (world, [seconds ahead])."""
    ahead = [0.0]
    async with open_world(registry, database_url, secret_box, clock=lambda: time.time() + ahead[0]) as world:
        assert (await push_ticket(world.sim, RETAIL["appid"]))["body"] == "success"
        await world.authorize("retail", OA, [1, 2, 24])
        await world.reset_counters()
        yield world, ahead


async def test_a_new_token_called_stale_inside_the_spacing_is_renewed_when_it_ends(
    shifted: tuple[World, list[float]],
) -> None:
    world, ahead = shifted
    first = await current(world)
    second = await current(world, stale=first)
    assert second != first
    assert await world.calls("api_authorizer_token") == 1
    # Called stale again 4 s into the 5 s spacing: the report waits out the last second, then renews; it
    # never gets back the value it reported (SPEC §7: no dead token once a renewal is possible).
    ahead[0] += STALE_RENEWAL_SPACING_S - 1
    started = time.monotonic()
    third = await current(world, stale=second)
    assert 0.8 < time.monotonic() - started < STALE_RENEWAL_SPACING_S
    assert third not in (first, second)
    assert await world.calls("api_authorizer_token") == 2
    assert await errcode_at_wechat(world, third) == 0
    # After the spacing nothing waits.
    ahead[0] += STALE_RENEWAL_SPACING_S + 1
    started = time.monotonic()
    fourth = await current(world, stale=third)
    assert time.monotonic() - started < 0.8
    assert fourth not in (first, second, third)
    assert await world.calls("api_authorizer_token") == 3


async def test_reports_inside_the_spacing_wait_and_renew_once(shifted: tuple[World, list[float]]) -> None:
    world, ahead = shifted
    first = await current(world)
    second = await current(world, stale=first)
    ahead[0] += STALE_RENEWAL_SPACING_S - 1
    reports = await asyncio.gather(*(vend(world.gateway, stale=second) for _ in range(20)))
    assert {r.status_code for r in reports} == {200}
    assert len({r.json()["access_token"] for r in reports}) == 1
    assert reports[0].json()["access_token"] not in (first, second)
    assert await world.calls("api_authorizer_token") == 2  # the first report's, then one for all 20


async def test_a_failed_renewal_starts_no_spacing(shifted: tuple[World, list[float]]) -> None:
    world, _ = shifted
    first = await current(world)
    await world.fault(endpoint="api_authorizer_token", errcode=40164)  # refused: not retried
    failed = await vend(world.gateway, stale=first)
    assert (failed.status_code, failed.json()["error"]["code"]) == (503, "wechat_unavailable")
    assert await world.calls("api_authorizer_token") == 1
    await world.sim.delete("/sim/faults")
    # At once, well inside 5 s: a new attempt, never the refused value back.
    started = time.monotonic()
    renewed = await current(world, stale=first)
    assert time.monotonic() - started < 0.8
    assert renewed != first
    assert await world.calls("api_authorizer_token") == 2
    assert await errcode_at_wechat(world, renewed) == 0


async def test_the_proxy_renews_a_new_token_called_stale_after_the_spacing(
    shifted: tuple[World, list[float]],
) -> None:
    world, ahead = shifted
    sdk = await gateway_token(world)
    assert (await proxied_user_get(world, sdk)).get("total")
    await world.reset_counters()
    await world.fault(endpoint="user/get", errcode=40001, times=1)
    assert (await proxied_user_get(world, sdk)).get("total")  # renewed, sent again
    assert await world.calls("api_authorizer_token") == 1
    ahead[0] += STALE_RENEWAL_SPACING_S + 1
    await world.fault(endpoint="user/get", errcode=40001, times=1)  # WeChat refuses the new token too
    assert (await proxied_user_get(world, sdk)).get("total")  # the old rule: 40001 for 30 s
    assert await world.calls("api_authorizer_token") == 2
    assert await world.calls("user/get") == 4


async def test_the_proxy_renews_a_new_token_called_stale_inside_the_spacing_after_waiting(
    shifted: tuple[World, list[float]],
) -> None:
    world, ahead = shifted
    sdk = await gateway_token(world)
    assert (await proxied_user_get(world, sdk)).get("total")
    await world.reset_counters()
    await world.fault(endpoint="user/get", errcode=40001, times=1)
    assert (await proxied_user_get(world, sdk)).get("total")  # renewed, sent again
    assert await world.calls("api_authorizer_token") == 1
    ahead[0] += STALE_RENEWAL_SPACING_S - 1
    await world.fault(endpoint="user/get", errcode=40001, times=1)  # WeChat refuses the new token too
    started = time.monotonic()
    answer = await proxied_user_get(world, sdk)
    assert answer.get("total"), answer  # not WeChat's 40001: renewed when the spacing ended, sent again
    assert time.monotonic() - started > 0.8
    assert await world.calls("api_authorizer_token") == 2
    assert await world.calls("user/get") == 4

"""The upstream client bound to a credential (`BoundClient`), against the simulator's HTTP interface.

A token WeChat calls stale (40001, 40014, 42001) is renewed once and a read sent once more with the new
value; a call that changes state (``SENT_ONCE``) is never sent again; a renewal that gives the stale
value back leaves WeChat's answer standing. Typed calls and a caller's own sends (the ``/wx`` proxy's
forwarding) go through the same `BoundClient.exchange`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from gateway.errors import UpstreamError
from gateway.simulator import SimulatorConfig, create_simulator_app
from gateway.wechat.client import SENT_ONCE, STALE_TOKEN_ERRCODES, BoundClient, WeChatClient
from tests.simulator.helpers import RETAIL, Clock, Inbox, Sim
from tests.support.credentials import Fixed

OA = "wxa0000000000001"
PRINCIPAL = "ACME Retail Co., Ltd."  # Sim.seed's default
OPEN = "wx0pen0000000001"
STALE = sorted(STALE_TOKEN_ERRCODES)


class Authorizer(Fixed):
    """OA's authorizer_access_token at the simulator, renewed there (api_authorizer_token) when reported
    stale while current, as the token service renews it."""

    def __init__(self, sim: Sim, refresh_token: str, value: str) -> None:
        super().__init__(value, "retail")
        self._sim = sim
        self._refresh_token = refresh_token

    async def renew(self, stale: str) -> str:
        self.renewed.append(stale)
        if stale == self.value:
            self.value = await self._sim.authorizer_token(OA, self._refresh_token)
        return self.value


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    config = SimulatorConfig(components=[RETAIL], ticket_interval_s=0, push_on_start=False)
    inbox, clock = Inbox(), Clock()
    app = create_simulator_app(config, clock=clock, push_transport=httpx.MockTransport(inbox.handle))
    async with AsyncTestClient(app, base_url="http://api.weixin.test") as client:
        yield Sim(client, inbox, clock)


@pytest.fixture
async def oa(sim: Sim) -> Authorizer:
    """OA authorized on retail with sets 1, 2 and 24, its token fetched; the counters reset."""
    refresh = (await sim.seed(OA, {RETAIL.appid: [1, 2, 24]}))[RETAIL.appid]
    credential = Authorizer(sim, refresh, await sim.authorizer_token(OA, refresh))
    await sim.control("POST", "/counters/reset")
    return credential


def bound(sim: Sim, credential: Fixed) -> BoundClient:
    return WeChatClient(sim.client, lambda: "http://api.weixin.test", backoff_s=0).bound(credential)


async def calls(sim: Sim, endpoint: str) -> int:
    counters = await sim.control("GET", "/counters")
    return int(counters.get(endpoint, {"total": 0})["total"])


async def tokens_sent(sim: Sim, endpoint: str) -> list[str | None]:
    """The access_token of each call of ``endpoint`` as WeChat received it."""
    received = (await sim.control("GET", "/requests"))["requests"]
    return [r["query"].get("access_token") for r in received if r["endpoint"] == endpoint]


async def fault(sim: Sim, endpoint: str, errcode: int, times: int | None = 1) -> None:
    await sim.control("POST", "/faults", {"endpoint": endpoint, "errcode": errcode, "times": times})


# --- reads ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("errcode", STALE)
async def test_a_read_called_stale_is_renewed_once_and_sent_once_more(
    sim: Sim, oa: Authorizer, errcode: int
) -> None:
    first = oa.value
    await fault(sim, "ticket/getticket", errcode)
    ticket = await bound(sim, oa).jsapi_ticket()
    assert ticket.value
    assert oa.renewed == [first]
    assert await calls(sim, "api_authorizer_token") == 1
    assert await tokens_sent(sim, "ticket/getticket") == [first, oa.value] != [first, first]


async def test_a_token_that_really_expired_at_wechat_is_renewed_and_the_read_sent_again(
    sim: Sim, oa: Authorizer
) -> None:
    first = oa.value
    await sim.control("POST", "/expire", {"what": "authorizer"})
    assert await sim.errcode("/cgi-bin/open/get", {}, token=first) == 42001
    assert await bound(sim, oa).open_get() is None  # answered with the renewed token: bound nowhere
    assert oa.renewed == [first]
    assert await tokens_sent(sim, "open/get") == [first, first, oa.value]


async def test_a_read_refused_again_after_the_renewal_is_not_sent_a_third_time(
    sim: Sim, oa: Authorizer
) -> None:
    first = oa.value
    await fault(sim, "ticket/getticket", 40001, times=None)
    with pytest.raises(UpstreamError) as refused:
        await bound(sim, oa).jsapi_ticket()
    assert refused.value.errcode == 40001
    assert oa.renewed == [first]  # renewed once, not again for the second refusal
    assert await tokens_sent(sim, "ticket/getticket") == [first, oa.value]


# --- calls that change state ------------------------------------------------------------------------------


@pytest.mark.parametrize("errcode", STALE)
async def test_a_call_sent_once_is_never_sent_again_but_its_token_is_renewed(
    sim: Sim, oa: Authorizer, errcode: int
) -> None:
    assert "cgi-bin/open/bind" in SENT_ONCE
    body = {"open_appid": OPEN, "principal_name": PRINCIPAL, "verified": True, "members": []}
    await sim.control("POST", "/open-accounts", body)
    first = oa.value
    await fault(sim, "open/bind", errcode)
    client = bound(sim, oa)
    with pytest.raises(UpstreamError) as refused:
        await client.open_bind(OPEN)
    assert refused.value.errcode == errcode  # WeChat's refusal, as it came
    assert await tokens_sent(sim, "open/bind") == [first]  # sent once
    assert oa.renewed == [first]
    # The caller's next try goes out with the renewed token, and binds.
    await client.open_bind(OPEN)
    assert await tokens_sent(sim, "open/bind") == [first, oa.value]
    assert await client.open_get() == OPEN


# --- a renewal that gives the stale value back ------------------------------------------------------------


@pytest.mark.parametrize("errcode", STALE)
async def test_a_renewal_to_the_same_value_leaves_wechats_answer(
    sim: Sim, oa: Authorizer, errcode: int
) -> None:
    same = Fixed(oa.value, "retail")  # WeChat hands the same value back (as a JS-SDK ticket renews)
    await fault(sim, "ticket/getticket", errcode)
    with pytest.raises(UpstreamError) as refused:
        await bound(sim, same).jsapi_ticket()
    assert refused.value.errcode == errcode
    assert same.renewed == [oa.value]
    assert await tokens_sent(sim, "ticket/getticket") == [oa.value]  # not sent again
    assert await calls(sim, "api_authorizer_token") == 0


# --- a caller's own sends (the proxy's forwarding) --------------------------------------------------------


def send_user_get(sim: Sim) -> Any:
    async def send(params: list[tuple[str, str]]) -> httpx.Response:
        return await sim.client.get("/cgi-bin/user/get", params=params)

    return send


def errcode_of(response: httpx.Response) -> int | None:
    errcode: int | None = msgspec.json.decode(response.content).get("errcode")
    return errcode


async def test_an_answer_calling_the_token_stale_is_renewed_and_sent_again_with_the_token_replaced(
    sim: Sim, oa: Authorizer
) -> None:
    first = oa.value
    await fault(sim, "user/get", 40014)
    query = [("access_token", "gw_the_callers_own"), ("next_openid", "")]
    answer = await bound(sim, oa).exchange("cgi-bin/user/get", query, send_user_get(sim), errcode_of)
    assert answer.json()["total"] >= 1
    assert oa.renewed == [first]
    assert await tokens_sent(sim, "user/get") == [first, oa.value]  # never the caller's own token


async def test_an_answer_calling_the_token_stale_stands_when_the_renewal_gives_it_back(
    sim: Sim, oa: Authorizer
) -> None:
    same = Fixed(oa.value, "retail")
    await fault(sim, "user/get", 42001)
    answer = await bound(sim, same).exchange("cgi-bin/user/get", [], send_user_get(sim), errcode_of)
    assert answer.json()["errcode"] == 42001  # WeChat's answer, passed back as it came
    assert same.renewed == [oa.value]
    assert await tokens_sent(sim, "user/get") == [oa.value]

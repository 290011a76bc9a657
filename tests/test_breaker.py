"""The upstream breaker's state machine (a clock of the test's own), its keys, and the upstream client
using it (WeChat played by a mock transport: no network, no waiting)."""

from __future__ import annotations

import logging

import httpx
import pytest

from gateway.errors import CircuitOpen, ConfigError, UpstreamError, UpstreamUnavailable
from gateway.settings import Settings
from gateway.wechat.breaker import (
    BreakerKey,
    BreakerPolicy,
    BreakerState,
    UpstreamBreakers,
    family_of,
    proxy_family,
)
from gateway.wechat.client import WeChatClient
from tests.support.credentials import Fixed

KEY = BreakerKey("retail", "authorizer_token")
OTHER = BreakerKey("finance", "authorizer_token")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def board(threshold: int = 3, cooldown_s: float = 10.0) -> tuple[UpstreamBreakers, Clock, list[str]]:
    clock = Clock()
    seen: list[str] = []
    breakers = UpstreamBreakers(
        BreakerPolicy(threshold, cooldown_s),
        clock=clock,
        on_change=lambda key, state: seen.append(f"{key} {state.name}"),
    )
    return breakers, clock, seen


def fail(breakers: UpstreamBreakers, key: BreakerKey = KEY, times: int = 1) -> None:
    for _ in range(times):
        breakers.failed(breakers.admit(key, "api_authorizer_token"))


def test_it_opens_after_the_threshold_of_faults_in_a_row_and_only_for_its_key() -> None:
    breakers, _, seen = board(threshold=3)
    fail(breakers, times=2)
    breakers.succeeded(breakers.admit(KEY, "api"))  # an answer resets the count
    fail(breakers, times=2)
    assert breakers.state(KEY) is BreakerState.CLOSED
    fail(breakers)
    assert breakers.state(KEY) is BreakerState.OPEN
    assert seen == ["retail/authorizer_token OPEN"]
    with pytest.raises(CircuitOpen) as refused:
        breakers.admit(KEY, "api_authorizer_token")
    assert isinstance(refused.value, UpstreamUnavailable)  # callers treat it as WeChat unreachable
    assert refused.value.retry_in_s == pytest.approx(10.0)
    assert "retail/authorizer_token" in str(refused.value) and "3 faults in a row" in str(refused.value)
    breakers.admit(OTHER, "api_authorizer_token")  # another platform's breaker is its own


def test_forgotten_breakers_start_closed_and_are_reported_so() -> None:
    breakers, _, seen = board(threshold=2)
    third = BreakerKey("ecom", "jsapi_ticket")
    fail(breakers, times=2)
    fail(breakers, OTHER, times=2)
    fail(breakers, third)  # one fault: still closed
    seen.clear()

    breakers.forget(["retail", "ecom"])
    assert seen == ["retail/authorizer_token CLOSED"]  # only what was not closed is reported
    assert breakers.states() == {OTHER: BreakerState.OPEN}
    breakers.succeeded(breakers.admit(KEY, "api_authorizer_token"))  # calls go through again
    fail(breakers, third)  # and the count started over
    assert breakers.state(third) is BreakerState.CLOSED

    breakers.forget()
    assert breakers.states() == {} and seen[-1] == "finance/authorizer_token CLOSED"


def test_after_the_cool_down_one_trial_call_decides() -> None:
    breakers, clock, seen = board(threshold=1, cooldown_s=10)
    fail(breakers)
    clock.now += 9.9
    with pytest.raises(CircuitOpen):
        breakers.admit(KEY, "api")
    clock.now += 0.1
    trial = breakers.admit(KEY, "api")
    assert trial.trial and breakers.state(KEY) is BreakerState.HALF_OPEN
    with pytest.raises(CircuitOpen, match="a trial call is under way"):
        breakers.admit(KEY, "api")  # everyone else still fails fast meanwhile
    breakers.succeeded(trial)
    assert breakers.state(KEY) is BreakerState.CLOSED
    assert seen == [f"{KEY} OPEN", f"{KEY} HALF_OPEN", f"{KEY} CLOSED"]
    assert not breakers.admit(KEY, "api").trial


def test_a_failed_trial_opens_it_for_another_full_cool_down() -> None:
    breakers, clock, _ = board(threshold=2, cooldown_s=5)
    fail(breakers, times=2)
    clock.now += 5
    breakers.failed(breakers.admit(KEY, "api"))
    assert breakers.state(KEY) is BreakerState.OPEN
    clock.now += 4.9
    with pytest.raises(CircuitOpen):
        breakers.admit(KEY, "api")
    clock.now += 0.1
    assert breakers.admit(KEY, "api").trial


def test_an_abandoned_trial_lets_the_next_call_try() -> None:
    breakers, clock, _ = board(threshold=1, cooldown_s=1)
    fail(breakers)
    clock.now += 1
    breakers.abandoned(breakers.admit(KEY, "api"))  # cancelled: decides nothing
    assert breakers.state(KEY) is BreakerState.HALF_OPEN
    breakers.succeeded(breakers.admit(KEY, "api"))
    assert breakers.state(KEY) is BreakerState.CLOSED


def test_late_answers_of_calls_admitted_before_it_opened_do_not_decide() -> None:
    breakers, clock, _ = board(threshold=2, cooldown_s=1)
    slow_ok, slow_fault = breakers.admit(KEY, "api"), breakers.admit(KEY, "api")
    fail(breakers, times=2)
    breakers.succeeded(slow_ok)  # open: a straggler's answer does not close it
    assert breakers.state(KEY) is BreakerState.OPEN
    clock.now += 1
    trial = breakers.admit(KEY, "api")
    breakers.failed(slow_fault)  # half-open: only the trial decides
    assert breakers.state(KEY) is BreakerState.HALF_OPEN
    breakers.succeeded(trial)
    assert breakers.state(KEY) is BreakerState.CLOSED


def test_transitions_are_logged_by_key(caplog: pytest.LogCaptureFixture) -> None:
    breakers, clock, _ = board(threshold=1, cooldown_s=1)
    with caplog.at_level(logging.INFO, logger="gateway.wechat.breaker"):
        fail(breakers)
        clock.now += 1
        breakers.succeeded(breakers.admit(KEY, "api"))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert "retail/authorizer_token opened after 1 faults in a row" in lines[0]
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO", "INFO"]


@pytest.mark.parametrize(
    ("path", "family"),
    [
        ("cgi-bin/component/api_component_token", "component_token"),
        ("cgi-bin/component/api_authorizer_token", "authorizer_token"),
        ("cgi-bin/component/api_get_authorizer_list", "authorizer_info"),
        ("cgi-bin/component/api_get_authorizer_info", "authorizer_info"),
        ("cgi-bin/component/api_query_auth", "authorization"),
        ("cgi-bin/component/api_create_preauthcode", "authorization"),
        ("cgi-bin/ticket/getticket", "jsapi_ticket"),
        ("cgi-bin/open/get", "open_account"),
        ("cgi-bin/component/clear_quota/v2", "clear_quota"),
        ("cgi-bin/message/custom/send", "other"),
    ],
)
def test_families_of_the_gateways_own_calls(path: str, family: str) -> None:
    assert family_of(path) == family


@pytest.mark.parametrize(
    ("path", "family"),
    [
        ("cgi-bin/user/get", "proxy:cgi-bin/user"),
        ("cgi-bin/user/info/batchget", "proxy:cgi-bin/user"),
        ("card/anything/the/client/likes", "proxy:card"),  # bounded, whatever the path
        ("wxa/getwxacode", "proxy:wxa/getwxacode"),
        ("sns/oauth2/component/access_token", "proxy:sns/oauth2"),
        ("no/such/api", "proxy:other"),
    ],
)
def test_proxy_families_are_a_bounded_set(path: str, family: str) -> None:
    assert proxy_family(path) == family


# --- the upstream client ------------------------------------------------------------------------------


def client(handler: httpx.MockTransport, breakers: UpstreamBreakers) -> WeChatClient:
    http = httpx.AsyncClient(transport=handler)
    return WeChatClient(http, lambda: "http://wechat.test", backoff_s=0, breakers=breakers)


RETAIL_COMPONENT = Fixed("ctoken", "retail", "component_access_token")


async def test_every_attempt_counts_and_an_open_breaker_sends_nothing() -> None:
    sent: list[str] = []

    def down(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.path)
        return httpx.Response(502, text="<html>bad gateway</html>")

    breakers, _, _ = board(threshold=5, cooldown_s=10)
    wechat = client(httpx.MockTransport(down), breakers)
    with pytest.raises(UpstreamUnavailable, match="HTTP 502 after 3 attempts"):
        await wechat.bound(RETAIL_COMPONENT).authorizer_token("wxc0mp000000001", "wxa0000000000001", "r")
    with pytest.raises(CircuitOpen, match="HTTP 502 after 2 attempts, then calls of retail/authorizer_token"):
        await wechat.bound(RETAIL_COMPONENT).authorizer_token("wxc0mp000000001", "wxa0000000000001", "r")
    assert len(sent) == 5
    with pytest.raises(CircuitOpen):
        await wechat.bound(RETAIL_COMPONENT).authorizer_token("wxc0mp000000001", "wxa0000000000001", "r")
    assert len(sent) == 5  # failed fast
    # other families, and other platforms, are not held
    with pytest.raises(UpstreamUnavailable, match="after 3 attempts"):
        await wechat.component_token("wxc0mp000000001", "secret", "ticket", platform_id="retail")
    assert breakers.state(BreakerKey("retail", "component_token")) is BreakerState.CLOSED
    with pytest.raises(UpstreamUnavailable, match="after 3 attempts"):
        await wechat.bound(Fixed("atoken", "finance")).jsapi_ticket()
    assert breakers.state(BreakerKey("finance", "jsapi_ticket")) is BreakerState.CLOSED


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(503),
        httpx.Response(200, json={"errcode": -1, "errmsg": "system error"}),
        httpx.Response(200, content=b'{"errcode":0,"errmsg":"o'),
        httpx.Response(200, json={"errcode": 0}),  # JSON without the expected fields
    ],
    ids=["5xx", "minus_one", "malformed", "fields_missing"],
)
async def test_what_counts_as_a_fault(answer: httpx.Response) -> None:
    breakers, _, _ = board(threshold=3)
    wechat = client(httpx.MockTransport(lambda request: answer), breakers)
    with pytest.raises(UpstreamUnavailable):
        await wechat.component_token("wxc0mp000000001", "secret", "ticket", platform_id="retail")
    assert breakers.state(BreakerKey("retail", "component_token")) is BreakerState.OPEN


@pytest.mark.parametrize("errcode", [40001, 45009, 61023, 40125])
async def test_refusals_prove_wechat_reachable(errcode: int) -> None:
    breakers, _, _ = board(threshold=1)
    answer = httpx.Response(200, json={"errcode": errcode, "errmsg": "no"})
    wechat = client(httpx.MockTransport(lambda request: answer), breakers)
    for _ in range(3):
        with pytest.raises(UpstreamError):
            await wechat.component_token("wxc0mp000000001", "secret", "ticket", platform_id="retail")
    assert breakers.state(BreakerKey("retail", "component_token")) is BreakerState.CLOSED


async def test_timeouts_and_refused_connections_are_faults_and_recovery_closes() -> None:
    state: dict[str, Exception] = {"failure": httpx.ConnectError("refused")}

    def flaky(request: httpx.Request) -> httpx.Response:
        failure = state.get("failure")
        if failure is not None:
            raise failure
        return httpx.Response(200, json={"component_access_token": "t", "expires_in": 7200})

    breakers, clock, _ = board(threshold=4, cooldown_s=2)
    wechat = client(httpx.MockTransport(flaky), breakers)
    with pytest.raises(UpstreamUnavailable, match="cannot connect"):
        await wechat.component_token("wxc0mp000000001", "secret", "ticket", platform_id="retail")
    state["failure"] = httpx.ReadTimeout("slow")
    with pytest.raises(CircuitOpen, match="timed out after 1 attempts"):
        await wechat.component_token("wxc0mp000000001", "secret", "ticket", platform_id="retail")
    del state["failure"]
    clock.now += 2
    fetched = await wechat.component_token("wxc0mp000000001", "secret", "ticket", platform_id="retail")
    assert fetched.value == "t"
    assert breakers.state(BreakerKey("retail", "component_token")) is BreakerState.CLOSED


def test_settings() -> None:
    key = "A" * 43 + "="
    base = {"GATEWAY_SECRET_KEY": key}
    defaults = Settings.from_environ(base)
    assert (defaults.upstream_breaker_threshold, defaults.upstream_breaker_cooldown_s) == (5, 10.0)
    tuned = Settings.from_environ(
        base | {"GATEWAY_UPSTREAM_BREAKER_THRESHOLD": "8", "GATEWAY_UPSTREAM_BREAKER_COOLDOWN_S": "30"}
    )
    assert (tuned.upstream_breaker_threshold, tuned.upstream_breaker_cooldown_s) == (8, 30.0)
    for name, value in [
        ("GATEWAY_UPSTREAM_BREAKER_THRESHOLD", "0"),
        ("GATEWAY_UPSTREAM_BREAKER_THRESHOLD", "2.5"),
        ("GATEWAY_UPSTREAM_BREAKER_COOLDOWN_S", "0.5"),
        ("GATEWAY_UPSTREAM_BREAKER_COOLDOWN_S", "soon"),
    ]:
        with pytest.raises(ConfigError, match=name):
            Settings.from_environ(base | {name: value})

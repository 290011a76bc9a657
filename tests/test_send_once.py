"""Calls that change state at WeChat are sent once, and a lost answer is read back (issue 19).

WeChat can apply open/bind, open/create or api_query_auth and lose the answer (protocol §10, last row):
the simulator's ``applied`` faults do exactly that. The simulator listens on a real socket with the
gateway's upstream timeout at 0.3 s (``open_upstream_world``), so a late answer is a real timeout. Its
counters show how many times each call reached WeChat. The same code arriving by the redirect and by the
``authorized`` push is claimed in the store before its one api_query_auth (SQLite and PostgreSQL here;
two real replicas in ``test_code_claim_replicas``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from gateway.binding.service import READ_BACK_AGAIN_S
from gateway.crypto import SecretBox
from gateway.errors import OutcomeUnknown, UpstreamError, UpstreamUnavailable, WeChatUnavailable
from gateway.http.errors import status_of
from gateway.wechat.client import SENT_ONCE, WeChatClient
from tests.support.credentials import Fixed
from tests.support.world import OA, RETAIL, World
from tests.test_onboarding import approve, auth, land, make_link
from tests.test_upstream_faults import TIMEOUT_S, open_upstream_world

GROUP_OPEN = "wx0pen0000000001"  # the test registry's binding open account
PRINCIPAL = "ACME Co., Ltd."  # OA's principal (tests.support.flows.approve_authorization)
NEW = "wxd0000000000004"  # an account about to be onboarded
LOST = TIMEOUT_S + 0.5  # an answer later than the gateway waits


@pytest.fixture
async def upstream(
    sqlite_url: str, secret_box: SecretBox, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[World]:
    async with open_upstream_world(sqlite_url, secret_box, monkeypatch) as world:
        yield world


@pytest.fixture(params=["sqlite", "postgres"])
async def either(
    request: pytest.FixtureRequest, secret_box: SecretBox, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[World]:
    """The same world on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        url: str = request.getfixturevalue("sqlite_url")
    else:
        from tests.conftest import _reset_postgres

        url = request.getfixturevalue("postgres_database")
        await _reset_postgres(url)
    async with open_upstream_world(url, secret_box, monkeypatch) as world:
        yield world


async def bind(world: World) -> httpx.Response:
    return await world.gateway.post(f"/v1/authorizers/{OA}/open-binding", headers=auth("onboarding"))


async def group_account(world: World) -> None:
    body = {"open_appid": GROUP_OPEN, "principal_name": PRINCIPAL, "verified": True}
    (await world.sim.post("/sim/open-accounts", json=body)).raise_for_status()


async def bound_at_wechat(world: World, appid: str = OA) -> str | None:
    state = (await world.sim.get("/sim/state")).json()
    open_appid: str | None = {a["authorizer_appid"]: a["open_appid"] for a in state["authorizers"]}[appid]
    return open_appid


async def when_called(world: World, endpoint: str, times: int = 1) -> None:
    """Wait until ``endpoint`` reached the simulator ``times`` times."""
    for _ in range(500):
        if await world.calls(endpoint) >= times:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{endpoint} was never called")


# --- open/bind and open/create -----------------------------------------------------------------------


async def test_a_bind_whose_answer_is_lost_is_sent_once_and_read_back(upstream: World) -> None:
    await group_account(upstream)
    await upstream.fault(endpoint="open/bind", delay_s=LOST, applied=True, times=1)
    response = await bind(upstream)
    assert response.status_code == 200, response.text
    assert response.json() == {"state": "newly_bound", "open_appid": GROUP_OPEN}
    assert await upstream.calls("open/bind") == 1  # a resend would have met 89000
    assert await upstream.calls("open/get") == 2  # before the bind, and after its answer was lost
    assert await bound_at_wechat(upstream) == GROUP_OPEN
    await upstream.services.audit.flush()
    actions = [r.action for r in await upstream.services.store.audit.recent(authorizer_appid=OA)]
    assert "binding.bound" in actions


@pytest.mark.parametrize("lost", [{"errcode": -1}, {"http_status": 502}, {"malformed": True}])
async def test_a_bind_lost_any_way_is_not_resent(upstream: World, lost: dict[str, Any]) -> None:
    await group_account(upstream)
    await upstream.fault(endpoint="open/bind", applied=True, times=1, **lost)
    response = await bind(upstream)
    assert response.json() == {"state": "newly_bound", "open_appid": GROUP_OPEN}, response.text
    assert await upstream.calls("open/bind") == 1


async def test_a_lost_bind_that_cannot_be_read_back_is_503_outcome_unknown(upstream: World) -> None:
    await group_account(upstream)
    await upstream.fault(endpoint="open/bind", delay_s=LOST, applied=True, times=1)
    pending = asyncio.create_task(bind(upstream))
    await when_called(upstream, "open/bind")  # open/get answered before it; now it fails
    await upstream.fault(endpoint="open/get", errcode=-1)
    response = await pending
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "wechat_unavailable" and "outcome unknown" in error["message"]
    assert await upstream.calls("open/bind") == 1
    assert await bound_at_wechat(upstream) == GROUP_OPEN  # it did happen; the gateway could not tell


async def test_a_bind_open_get_never_shows_is_outcome_unknown_and_safe_to_retry(upstream: World) -> None:
    await group_account(upstream)
    await upstream.fault(endpoint="open/bind", errcode=-1, times=1)  # WeChat did not act, and never will
    started = time.monotonic()
    response = await bind(upstream)
    assert time.monotonic() - started >= READ_BACK_AGAIN_S  # open/get read twice, that far apart
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "wechat_unavailable"
    assert "not bound as of open/get; outcome unknown; safe to retry after a short wait" in error["message"]
    assert await upstream.calls("open/bind") == 1
    assert await upstream.calls("open/get") == 3  # before the bind, then twice after its answer was lost
    assert await bound_at_wechat(upstream) is None
    retried = await bind(upstream)
    assert retried.json() == {"state": "newly_bound", "open_appid": GROUP_OPEN}


async def test_a_bind_wechat_completes_after_the_first_read_back_is_bound(upstream: World) -> None:
    await upstream.fault(endpoint="open/bind", errcode=-1, times=1)  # not done yet when it answers
    pending = asyncio.create_task(bind(upstream))
    await when_called(upstream, "open/get", 2)  # before the bind, and the first read-back: unbound
    # WeChat finishes processing the bind now, while the gateway waits to read again.
    body = {"open_appid": GROUP_OPEN, "principal_name": PRINCIPAL, "verified": True, "members": [OA]}
    (await upstream.sim.post("/sim/open-accounts", json=body)).raise_for_status()
    response = await pending
    assert response.status_code == 200, response.text
    assert response.json() == {"state": "newly_bound", "open_appid": GROUP_OPEN}
    assert await upstream.calls("open/bind") == 1
    assert await upstream.calls("open/get") == 3


async def test_a_bind_wechat_acts_on_after_the_timeout_is_found_by_the_second_read(upstream: World) -> None:
    await group_account(upstream)
    # WeChat acts LOST s after receiving the bind: after the gateway gave up (TIMEOUT_S) and read open/get
    # once, before it reads again READ_BACK_AGAIN_S later.
    await upstream.fault(endpoint="open/bind", delay_s=LOST, times=1)
    response = await bind(upstream)
    assert response.json() == {"state": "newly_bound", "open_appid": GROUP_OPEN}, response.text
    assert await upstream.calls("open/bind") == 1
    assert await bound_at_wechat(upstream) == GROUP_OPEN


async def test_a_create_open_get_never_shows_is_outcome_unknown(upstream: World) -> None:
    await upstream.fault(endpoint="open/create", errcode=-1, times=1)
    with pytest.raises(WeChatUnavailable) as refused:
        await upstream.services.binding.create_from(OA, actor="test", force=True)
    assert (status_of(refused.value), refused.value.code) == (503, "wechat_unavailable")
    assert "not bound as of open/get; outcome unknown" in refused.value.message
    assert await upstream.calls("open/create") == 1
    # The plan's read, the check just before sending, and the two read-backs after the lost answer.
    assert await upstream.calls("open/get") == 4


async def test_a_create_whose_answer_is_lost_is_sent_once_and_read_back(upstream: World) -> None:
    await upstream.fault(endpoint="open/create", delay_s=LOST, applied=True, times=1)
    open_appid, _ = await upstream.services.binding.create_from(OA, actor="test", force=True)
    assert open_appid == await bound_at_wechat(upstream)
    assert await upstream.calls("open/create") == 1  # a resend would have met 89000
    [account] = (await upstream.sim.get("/sim/state")).json()["open_accounts"]
    assert account["open_appid"] == open_appid and account["members"] == [OA]


async def test_a_lost_create_that_cannot_be_read_back_is_503_outcome_unknown(upstream: World) -> None:
    await upstream.fault(endpoint="open/create", delay_s=LOST, applied=True, times=1)
    pending = asyncio.create_task(upstream.services.binding.create_from(OA, actor="test", force=True))
    await when_called(upstream, "open/create")
    await upstream.fault(endpoint="open/get", http_status=502)
    with pytest.raises(WeChatUnavailable) as refused:
        await pending
    assert (status_of(refused.value), refused.value.code) == (503, "wechat_unavailable")
    assert "outcome unknown" in refused.value.message
    assert await upstream.calls("open/create") == 1


# --- api_query_auth -----------------------------------------------------------------------------------


async def held_approval(world: World, appid: str = NEW) -> dict[str, Any]:
    """An administrator approves; WeChat's ``authorized`` push is held back (``push_now``)."""
    link = (await make_link(world)).json()
    return await approve(world, link, appid, [1, 2, 24], push_now=False)


async def push(world: World, auth_code: str) -> None:
    record = (await world.sim.post(f"/sim/auth-codes/{auth_code}/push")).json()
    assert record["delivered"], record


async def code_state(world: World, auth_code: str) -> str | None:
    claim = await world.services.store.authorizations.code_claim(auth_code)
    return None if claim is None else claim.state


async def grants_recorded(world: World, appid: str) -> int:
    """``authorization.granted`` entries for ``appid`` (the audit trail flushes in the background too)."""
    await world.services.audit.flush()
    await asyncio.sleep(0.1)  # a background flush that took the record first has finished
    await world.services.audit.flush()
    records = await world.services.store.audit.recent(authorizer_appid=appid)
    return sum(r.action == "authorization.granted" for r in records)


async def test_a_lost_exchange_on_the_redirect_is_not_resent_and_the_push_completes_it(
    upstream: World,
) -> None:
    approval = await held_approval(upstream)
    await upstream.fault(endpoint="api_query_auth", delay_s=LOST, applied=True, times=1)
    page = await land(upstream, approval["redirect_url"])
    assert page.status_code == 503, page.text
    assert "outcome unknown" in page.text.lower() and "notice" in page.text
    assert await upstream.calls("api_query_auth") == 1  # a resend would have met 61009
    assert await code_state(upstream, approval["auth_code"]) == "unknown"
    assert await upstream.services.store.authorizations.get("retail", NEW) is None

    # WeChat's push names the account: the gateway reads the authorization back instead of resending.
    await push(upstream, approval["auth_code"])
    assert await upstream.services.authorizations.process_pending() == 1
    stored = await upstream.services.store.authorizations.get("retail", NEW)
    assert stored is not None and stored.func_ids == {1, 2, 24} and stored.status == "active"
    assert await upstream.calls("api_query_auth") == 1
    assert await upstream.calls("api_get_authorizer_info") >= 1
    assert await code_state(upstream, approval["auth_code"]) == "exchanged"
    token = await upstream.token(NEW)
    assert token.status_code == 200, token.text  # the refresh token read back works

    again = await land(upstream, approval["redirect_url"])  # the administrator reloads the page
    assert again.status_code == 200 and NEW in again.text and "New Account" in again.text
    assert await upstream.calls("api_query_auth") == 1
    assert await grants_recorded(upstream, NEW) == 1


async def test_a_lost_exchange_of_the_push_is_read_back_at_once(upstream: World) -> None:
    approval = await held_approval(upstream)
    await upstream.fault(endpoint="api_query_auth", delay_s=LOST, applied=True, times=1)
    await push(upstream, approval["auth_code"])
    assert await upstream.services.authorizations.process_pending() == 1
    assert await upstream.calls("api_query_auth") == 1
    stored = await upstream.services.store.authorizations.get("retail", NEW)
    assert stored is not None and stored.func_ids == {1, 2, 24}
    page = await land(upstream, approval["redirect_url"])
    assert page.status_code == 200 and "New Account" in page.text
    assert await upstream.calls("api_query_auth") == 1


async def test_reads_keep_their_retries(upstream: World) -> None:
    await upstream.fault(endpoint="api_get_authorizer_info", errcode=-1)
    await upstream.services.authorizations.refresh_profile("retail", OA)  # keeps the last profile
    assert await upstream.calls("api_get_authorizer_info") == 3


# --- the code claim -----------------------------------------------------------------------------------


@pytest.mark.parametrize("first", ["redirect", "push"])
async def test_the_redirect_and_the_push_at_once_exchange_the_code_once(either: World, first: str) -> None:
    approval = await held_approval(either)
    await push(either, approval["auth_code"])  # recorded; the worker is not running
    # WeChat is slow enough that both arrivals would be waiting on it together.
    await either.fault(endpoint="api_query_auth", delay_s=TIMEOUT_S / 2)

    async def redirect() -> httpx.Response:
        return await land(either, approval["redirect_url"])

    async def event() -> int:
        return await either.services.authorizations.process_pending()

    if first == "redirect":
        page, handled = await asyncio.gather(redirect(), event())
    else:
        handled, page = await asyncio.gather(event(), redirect())
    assert page.status_code == 200, page.text
    assert NEW in page.text and "24 open-platform account management" in page.text
    assert handled == 1
    assert await either.calls("api_query_auth") == 1
    async with either.services.store.engine.connect() as conn:
        query = text("SELECT outcome FROM component_pushes WHERE authorizer_appid = :a")
        outcome = (await conn.execute(query, {"a": NEW})).scalar_one()
        stored = (
            await conn.execute(
                text("SELECT count(*) FROM authorizations WHERE authorizer_appid = :a"), {"a": NEW}
            )
        ).scalar_one()
    assert stored == 1
    assert outcome in ("already exchanged", f"{NEW} authorized")
    assert await grants_recorded(either, NEW) == 1


async def test_a_claim_whose_holder_died_lapses_and_is_taken_over(upstream: World) -> None:
    approval = await held_approval(upstream)
    store = upstream.services.store.authorizations
    held = await store.claim_code(approval["auth_code"], "retail", "dead-replica:1:x", lease_s=0.3)
    assert held.won  # it died before sending the code
    await asyncio.sleep(0.4)
    page = await land(upstream, approval["redirect_url"])
    assert page.status_code == 200 and "New Account" in page.text, page.text
    assert await upstream.calls("api_query_auth") == 1


async def test_a_code_a_dead_holder_may_have_used_is_unknown_until_the_push_reads_it_back(
    upstream: World,
) -> None:
    approval = await held_approval(upstream)
    store = upstream.services.store.authorizations
    await store.claim_code(approval["auth_code"], "retail", "dead-replica:1:x", lease_s=0.3)
    # The dead holder's exchange reached WeChat: the code is used up.
    component = await upstream.services.tokens.component_token("retail")
    used = await upstream.sim.post(
        "/cgi-bin/component/api_query_auth",
        params={"component_access_token": component.value},
        json={"component_appid": RETAIL["appid"], "authorization_code": approval["auth_code"]},
    )
    assert "authorization_info" in used.json()
    await asyncio.sleep(0.4)
    page = await land(upstream, approval["redirect_url"])
    assert page.status_code == 503 and "outcome unknown" in page.text.lower(), page.text  # not "invalid"
    assert await code_state(upstream, approval["auth_code"]) == "unknown"
    await push(upstream, approval["auth_code"])
    await upstream.services.authorizations.process_pending()
    assert await upstream.services.store.authorizations.get("retail", NEW) is not None
    assert await upstream.calls("api_query_auth") == 2  # the dead holder's, and the take-over's 61009


async def test_a_refused_code_is_refused_to_both_arrivals(upstream: World) -> None:
    approval = await held_approval(upstream)
    await upstream.fault(endpoint="api_query_auth", errcode=61010, times=1)  # WeChat: the code expired
    page = await land(upstream, approval["redirect_url"])
    assert page.status_code == 410 and "61010" in page.text, page.text
    await push(upstream, approval["auth_code"])
    await upstream.services.authorizations.process_pending()
    assert await upstream.calls("api_query_auth") == 1  # the push was told what the redirect was
    assert await code_state(upstream, approval["auth_code"]) == "refused"
    async with upstream.services.store.engine.connect() as conn:
        query = text("SELECT outcome FROM component_pushes WHERE authorizer_appid = :a")
        outcome = (await conn.execute(query, {"a": NEW})).scalar_one()
    assert outcome == "code refused by WeChat (61010)"


# --- the client: which calls are sent once ------------------------------------------------------------


def test_the_state_changing_calls_are_named_once() -> None:
    for path in (
        "cgi-bin/component/api_query_auth",
        "cgi-bin/open/bind",
        "cgi-bin/open/create",
        "cgi-bin/open/unbind",
        "cgi-bin/component/clear_quota/v2",
    ):
        assert path in SENT_ONCE
    for read in ("cgi-bin/open/get", "cgi-bin/component/api_get_authorizer_info"):
        assert read not in SENT_ONCE


@pytest.mark.parametrize(
    ("failure", "unknown"),
    [
        (httpx.ConnectError("refused"), False),  # never left: WeChat cannot have acted on it
        (httpx.ConnectTimeout("no connection"), False),
        (httpx.ReadTimeout("slow"), True),
        (httpx.RemoteProtocolError("dropped mid-answer"), True),
    ],
)
async def test_a_call_sent_once_is_unknown_only_if_it_may_have_left(
    failure: Exception, unknown: bool
) -> None:
    sent: list[str] = []

    def fail(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.path)
        raise failure

    async with httpx.AsyncClient(transport=httpx.MockTransport(fail)) as http:
        wechat = WeChatClient(http, lambda: "https://api.weixin.test", backoff_s=0)
        with pytest.raises(UpstreamUnavailable) as raised:
            await wechat.bound(Fixed("token")).open_bind(GROUP_OPEN)
    assert isinstance(raised.value, OutcomeUnknown) is unknown
    assert ("outcome unknown" in str(raised.value)) is unknown
    assert sent == ["/cgi-bin/open/bind"]  # once, whatever the failure


async def test_a_refusal_of_a_call_sent_once_is_a_refusal() -> None:
    answer = httpx.Response(200, json={"errcode": 89001, "errmsg": "principal mismatch"})
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda request: answer)) as http:
        wechat = WeChatClient(http, lambda: "https://api.weixin.test", backoff_s=0)
        with pytest.raises(UpstreamError) as refused:
            await wechat.bound(Fixed("token")).open_bind(GROUP_OPEN)
    assert refused.value.errcode == 89001

"""The token routes in the fast lane (`gateway.http.fast_lane`): the same answers as the controller, and
every request of a shape the lane does not take left to the controller."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import msgspec
import pytest
from sqlalchemy import text

from gateway.crypto import SecretBox
from gateway.http import fast_lane
from gateway.registry.model import RateLimit, Registry
from tests.conftest import CLIENT_KEYS
from tests.support.flows import push_ticket
from tests.support.world import OA, OA2, RETAIL, World, open_world

KINDS = ["access-token", "jsapi-ticket"]
# A request with a body header is one the lane never takes: the controller answers, as without the lane.
TO_THE_ROUTE = {"Content-Length": "0"}


class Taken:
    """Counts the requests the lane answered (only the lane answers with `_json` or `_refusal`); with
    ``fail`` set, the lane's answer fails after every check."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self.fail: Exception | None = None
        answers: dict[str, Callable[..., Any]] = {
            name: getattr(fast_lane, name) for name in ("_json", "_refusal")
        }
        for name, original in answers.items():
            monkeypatch.setattr(fast_lane, name, self._counting(name, original))

    def _counting(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any) -> Any:
            self.count += 1
            if self.fail is not None and name == "_json":
                raise self.fail
            return original(*args)

        return counted


@pytest.fixture
def taken(ready: World, monkeypatch: pytest.MonkeyPatch) -> Taken:
    return Taken(monkeypatch)


def bearer(client: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {CLIENT_KEYS[client]}"}


def comparable(response: httpx.Response) -> tuple[int, bytes, list[tuple[str, str]]]:
    """Status, body and headers, but the request id (another on each request), which must be there."""
    assert response.headers["x-request-id"]
    headers = sorted((k, v) for k, v in response.headers.items() if k != "x-request-id")
    return response.status_code, response.content, headers


@pytest.mark.parametrize("kind", KINDS)
async def test_a_token_is_answered_exactly_as_the_controller_answers_it(
    ready: World, taken: Taken, kind: str
) -> None:
    path = f"/v1/authorizers/{OA}/{kind}"
    first = await ready.gateway.get(path, headers=bearer("crm"))  # reads and fetches
    assert first.status_code == 200, first.text
    assert taken.count == 1
    cached = await ready.gateway.get(path, headers=bearer("crm"))
    assert taken.count == 2
    routed = await ready.gateway.get(path, headers=bearer("crm") | TO_THE_ROUTE)
    assert taken.count == 2

    assert comparable(cached) == comparable(routed) == comparable(first)
    # Audited and counted like the controller's answers: one audit record and one metric sample each.
    await ready.services.audit.flush()
    action = "token.issued" if kind == "access-token" else "jsapi_ticket.issued"
    records = await ready.services.store.audit.recent(authorizer_appid=OA)
    assert [(r.actor, r.action, r.platform_id) for r in records if r.action == action] == [
        ("crm", action, "retail")
    ] * 3
    samples = [
        s
        for metric in ready.services.metrics.registry.collect()
        if metric.name == "gateway_http_requests"
        for s in metric.samples
        if s.name == "gateway_http_requests_total" and s.labels["route"].endswith(kind)
    ]
    assert [(s.labels["route"], s.labels["status"], s.value) for s in samples] == [
        (f"/v1/authorizers/{{appid}}/{kind}", "200", 3.0)
    ]


async def test_every_refusal_is_worded_as_the_controller_words_it(ready: World, taken: Taken) -> None:
    assert (await ready.token(OA)).status_code == 200
    path = f"/v1/authorizers/{OA}/access-token"
    refusals = {
        "no key": {},
        "unknown key": {"Authorization": "Bearer not-a-key"},
        "another scheme": {"Authorization": f"Basic {CLIENT_KEYS['crm']}"},
        "no token scope": bearer("audit"),
    }
    for why, headers in refusals.items():
        before = taken.count
        refused = await ready.gateway.get(path, headers=headers)
        assert taken.count == before + 1, why
        routed = await ready.gateway.get(path, headers=headers | TO_THE_ROUTE)
        assert refused.status_code in (401, 403), why
        assert comparable(refused) == comparable(routed), why
        assert taken.count == before + 1, why
    # A client limited to some authorizers: refused for another, whatever is cached.
    assert (await ready.gateway.get(path, headers=bearer("limited"))).status_code == 200
    await ready.authorize("retail", OA2, [1])
    assert (await ready.token(OA2)).status_code == 200
    outside = await ready.gateway.get(f"/v1/authorizers/{OA2}/access-token", headers=bearer("limited"))
    assert (outside.status_code, outside.json()["error"]["code"]) == (403, "forbidden")
    # An unknown authorizer, and one of the wrong shape, as the controller words them.
    for appid in ("wx0000000000000000", "not-an-appid"):
        url = f"/v1/authorizers/{appid}/access-token"
        fast = await ready.gateway.get(url, headers=bearer("crm"))
        routed = await ready.gateway.get(url, headers=bearer("crm") | TO_THE_ROUTE)
        assert fast.status_code in (404, 422), fast.text
        assert comparable(fast) == comparable(routed), appid

    # A revocation is seen at once: 410.
    revoke = await ready.sim.post(
        "/sim/authorizations/revoke", json={"component_appid": RETAIL["appid"], "authorizer_appid": OA}
    )
    assert revoke.status_code == 200
    await ready.services.authorizations.process_pending()
    before = taken.count
    gone = await ready.token(OA)
    assert (gone.status_code, gone.json()["error"]["code"]) == (410, "authorization_revoked")
    assert taken.count == before + 1
    assert comparable(gone) == comparable(await ready.gateway.get(path, headers=bearer("crm") | TO_THE_ROUTE))


async def test_an_expired_token_is_renewed_in_the_lane(ready: World, taken: Taken) -> None:
    before = (await ready.token(OA)).json()["access_token"]
    await ready.expire_everything()
    await ready.reset_counters()
    renewed = await ready.token(OA)
    assert renewed.json()["access_token"] != before
    assert await ready.calls("api_authorizer_token", OA) == 1
    assert (await ready.token(OA)).json() == renewed.json()
    assert (taken.count, await ready.calls("api_authorizer_token", OA)) == (3, 1)


async def test_a_revocation_during_the_rate_limits_wait_is_seen(
    ready: World, taken: Taken, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (await ready.token(OA)).status_code == 200
    limiter = ready.services.vending._limiter
    admitted, waiting = asyncio.Event(), asyncio.Event()

    async def slow_admit(client: Any) -> None:  # as Redis may take a while to answer
        waiting.set()
        await admitted.wait()

    monkeypatch.setattr(limiter, "admit", slow_admit)
    asked = asyncio.create_task(ready.token(OA))
    await asyncio.wait_for(waiting.wait(), 5)
    revoke = await ready.sim.post(
        "/sim/authorizations/revoke", json={"component_appid": RETAIL["appid"], "authorizer_appid": OA}
    )
    assert revoke.status_code == 200
    await ready.services.authorizations.process_pending()
    admitted.set()

    answer = await asyncio.wait_for(asked, 5)
    assert (answer.status_code, answer.json()["error"]["code"]) == (410, "authorization_revoked")
    assert taken.count == 2
    await ready.services.audit.flush()
    records = await ready.services.store.audit.recent(authorizer_appid=OA)
    assert len([r for r in records if r.action == "token.issued"]) == 1  # the first request's only


@pytest.fixture
async def shifted(
    registry: Registry, database_url: str, secret_box: SecretBox
) -> AsyncIterator[tuple[World, list[float]]]:
    """``ready``'s world on a clock the test moves forward: (world, [seconds ahead])."""
    ahead = [0.0]
    async with open_world(registry, database_url, secret_box, clock=lambda: time.time() + ahead[0]) as w:
        assert (await push_ticket(w.sim, RETAIL["appid"]))["body"] == "success"
        await w.authorize("retail", OA, [1, 2, 24])
        yield w, ahead


async def test_grants_changed_elsewhere_are_seen_once_their_cache_lapses(
    shifted: tuple[World, list[float]],
) -> None:
    world, ahead = shifted
    assert (await world.token(OA)).status_code == 200
    # Revoked behind the process's back (another replica acted on the event): the cached grants hold
    # for their 2 s.
    async with world.services.store.engine.begin() as conn:
        await conn.execute(text("UPDATE authorizations SET status = 'revoked', revoked_at = 1"))
    assert (await world.token(OA)).status_code == 200
    ahead[0] = 3.0
    gone = await world.token(OA)
    assert (gone.status_code, gone.json()["error"]["code"]) == (410, "authorization_revoked")


@pytest.mark.parametrize(
    ("what", "method", "suffix", "headers"),
    [
        ("HEAD", "HEAD", "", {}),
        ("POST", "POST", "", {}),
        ("a further segment", "GET", "/more", {}),
        ("a body", "GET", "", {"Transfer-Encoding": "chunked"}),
        ("an unusual Host", "GET", "", {"Host": "gateway.test!"}),
    ],
)
async def test_requests_of_other_shapes_go_to_the_app(
    ready: World, taken: Taken, what: str, method: str, suffix: str, headers: dict[str, str]
) -> None:
    assert (await ready.token(OA)).status_code == 200
    path = f"/v1/authorizers/{OA}/access-token{suffix}"
    response = await ready.gateway.request(method, path, headers=bearer("crm") | headers)
    assert taken.count == 1, what
    assert response.status_code != 500, response.text


async def test_a_trailing_slash_is_the_same_route(ready: World, taken: Taken) -> None:
    path = f"/v1/authorizers/{OA}/access-token/"
    fast = await ready.gateway.get(path, headers=bearer("crm"))
    routed = await ready.gateway.get(path, headers=bearer("crm") | TO_THE_ROUTE)
    assert (fast.status_code, taken.count) == (200, 1)
    assert comparable(fast) == comparable(routed)


async def test_a_query_string_changes_nothing(ready: World, taken: Taken) -> None:
    response = await ready.gateway.get(f"/v1/authorizers/{OA}/access-token?fresh=1", headers=bearer("crm"))
    assert (response.status_code, taken.count) == (200, 1)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_stale_report_goes_to_the_controller(ready: World, taken: Taken, kind: str) -> None:
    field, endpoint = ("access_token", "api_authorizer_token")
    if kind == "jsapi-ticket":
        field, endpoint = ("ticket", "ticket/getticket")
    path = f"/v1/authorizers/{OA}/{kind}"
    value = (await ready.gateway.get(path, headers=bearer("crm"))).json()[field]
    assert taken.count == 1
    await ready.reset_counters()

    renewed = await ready.gateway.get(path, headers=bearer("crm"), params={"stale": value})
    assert renewed.status_code == 200, renewed.text
    assert await ready.calls(endpoint) == 1  # the stored value was the one reported: renewed
    if kind == "access-token":
        assert renewed.json()[field] != value
    assert (await ready.gateway.get(path, headers=bearer("crm"))).json() == renewed.json()
    assert taken.count == 2
    # Whatever is reported, in whatever spelling, the controller answers.
    for query in (f"stale={value}", f"st%61le={value}", "stale=garbage", "stale=" + "x" * 513, "stale="):
        fast = await ready.gateway.get(f"{path}?{query}", headers=bearer("crm"))
        routed = await ready.gateway.get(f"{path}?{query}", headers=bearer("crm") | TO_THE_ROUTE)
        assert comparable(fast) == comparable(routed), query
        assert fast.status_code == (422 if "x" * 513 in query else 200), query
    assert taken.count == 2  # every one went to the controller
    assert await ready.calls(endpoint) == 1


async def test_a_failure_after_the_checks_is_answered_as_the_app_answers_it(
    ready: World, taken: Taken, caplog: pytest.LogCaptureFixture
) -> None:
    assert (await ready.token(OA)).status_code == 200
    taken.fail = RuntimeError("the secret token value")
    with caplog.at_level(logging.ERROR):
        failed = await ready.token(OA)
    assert failed.status_code == 500
    assert failed.json()["error"] == {"code": "internal_error", "message": "the gateway failed; see its log"}
    assert "RuntimeError" in caplog.text and "access-token" in caplog.text
    assert "the secret token value" not in failed.text
    assert failed.headers["x-request-id"]


@pytest.fixture
async def limited_crm(
    registry: Registry, database_url: str, secret_box: SecretBox, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[World, Taken]]:
    slow = RateLimit(per_second=0.01, burst=2)  # no refill during the test
    clients = tuple(
        msgspec.structs.replace(c, rate_limit=slow) if c.id == "crm" else c for c in registry.clients
    )
    async with open_world(msgspec.structs.replace(registry, clients=clients), database_url, secret_box) as w:
        assert (await push_ticket(w.sim, RETAIL["appid"]))["body"] == "success"
        await w.authorize("retail", OA, [1, 2, 24])
        yield w, Taken(monkeypatch)


async def test_the_rate_limit_refuses_as_the_controller_does(limited_crm: tuple[World, Taken]) -> None:
    world, taken = limited_crm
    assert (await world.token(OA)).status_code == 200
    assert (await world.token(OA)).status_code == 200  # the burst of 2 is spent
    refused = await world.token(OA)
    assert taken.count == 3
    routed = await world.gateway.get(
        f"/v1/authorizers/{OA}/access-token", headers=bearer("crm") | TO_THE_ROUTE
    )
    assert refused.status_code == 429
    assert comparable(refused) == comparable(routed)
    assert refused.headers["retry-after"] == "100"
    await world.services.audit.flush()
    records = await world.services.store.audit.recent(authorizer_appid=OA)
    assert len([r for r in records if r.action == "token.issued"]) == 2  # refusals are not handed tokens

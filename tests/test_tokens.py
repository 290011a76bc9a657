"""Tokens through the gateway's HTTP API, WeChat played by the simulator (both in-process, over ASGI)."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from sqlalchemy import text

from gateway.crypto import SecretBox
from gateway.errors import TicketMissing
from gateway.http.app import create_app
from gateway.registry.model import Registry
from tests.conftest import CLIENT_KEYS, make_settings
from tests.support.asgi import LateASGITransport, running
from tests.support.flows import approve_authorization, push_ticket
from tests.support.world import OA, OA2, RETAIL, World


async def test_an_authorizer_token_works_at_wechat_and_is_audited(ready: World) -> None:
    response = await ready.token(OA)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"authorizer_appid", "platform", "access_token", "expires_at"}
    assert (body["authorizer_appid"], body["platform"]) == (OA, "retail")
    assert response.headers["cache-control"] == "no-store"
    users = await ready.sim.get("/cgi-bin/user/get", params={"access_token": body["access_token"]})
    assert users.json().get("errcode", 0) == 0, users.text
    await ready.services.audit.flush()
    records = await ready.services.store.audit.recent(authorizer_appid=OA)
    issued = [r for r in records if r.action == "token.issued"]
    assert [(r.actor, r.platform_id) for r in issued] == [("crm", "retail")]
    assert body["access_token"] not in str(records)


async def test_concurrent_callers_cause_one_fetch_of_each_token(ready: World) -> None:
    # The token api_query_auth returned is stored at the authorization: drop it, so that one is fetched.
    await ready.services.tokens.forget_authorizer("retail", OA)
    responses = await asyncio.gather(*(ready.token(OA) for _ in range(50)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["access_token"] for r in responses}) == 1
    assert await ready.calls("api_authorizer_token", OA) == 1
    assert await ready.calls("api_component_token") == 0  # held since the authorization code's exchange
    # and once cached, no more calls at all
    await asyncio.gather(*(ready.token(OA) for _ in range(20)))
    assert await ready.calls("api_authorizer_token") == 1


async def test_expired_tokens_are_fetched_again_exactly_once(ready: World) -> None:
    first = (await ready.token(OA)).json()["access_token"]
    await ready.expire_everything()
    await ready.reset_counters()
    responses = await asyncio.gather(*(ready.token(OA) for _ in range(30)))
    assert {r.json()["access_token"] for r in responses} != {first}
    assert await ready.calls("api_component_token") == 1
    assert await ready.calls("api_authorizer_token") == 1


async def test_jsapi_ticket_is_cached_centrally(ready: World) -> None:
    responses = await asyncio.gather(*(ready.token(OA, kind="jsapi-ticket") for _ in range(20)))
    assert {r.status_code for r in responses} == {200}
    body = responses[0].json()
    assert set(body) == {"authorizer_appid", "platform", "ticket", "expires_at"}
    assert await ready.calls("ticket/getticket") == 1


async def test_without_a_ticket_callers_get_503_and_wechat_is_not_called(world: World) -> None:
    response = await world.token(OA)
    # No authorization is known yet either: the ticket matters only once routing found a platform.
    assert response.status_code == 404
    ready = (await world.gateway.get("/readyz")).json()
    assert {p["problem"] for p in ready["platforms"]} == {"no component_verify_ticket received yet"}
    with pytest.raises(Exception, match="ticket_missing"):
        await world.services.tokens.component_token("retail")
    assert await world.calls("api_component_token") == 0


@pytest.mark.parametrize(
    ("client", "headers", "appid", "status", "code"),
    [
        (None, {}, OA, 401, "unauthenticated"),
        (None, {"Authorization": "Bearer nope"}, OA, 401, "unauthenticated"),
        (None, {"Authorization": "Basic abc"}, OA, 401, "unauthenticated"),
        ("audit", None, OA, 403, "forbidden"),  # no token scope
        ("limited", None, OA2, 403, "forbidden"),  # outside its authorizer list, whether OA2 exists or not
        ("limited", None, "wxdoesnotexist01", 403, "forbidden"),
        ("crm", None, "wxdoesnotexist01", 404, "authorizer_unknown"),
        ("crm", None, "not-an-appid", 422, "invalid_request"),
    ],
)
async def test_refusals(
    ready: World, client: str | None, headers: dict[str, str] | None, appid: str, status: int, code: str
) -> None:
    if client is not None:
        headers = {"Authorization": f"Bearer {CLIENT_KEYS[client]}"}
    response = await ready.gateway.get(f"/v1/authorizers/{appid}/access-token", headers=headers)
    problem = response.json()
    assert (response.status_code, problem["error"]["code"]) == (status, code)
    # RFC 9457 members beside the house's `error`, and nothing else
    assert set(problem) == {"type", "title", "status", "detail", "error"}
    assert (problem["status"], problem["detail"]) == (status, problem["error"]["message"])
    assert await ready.calls("api_authorizer_token") == 0


async def test_limited_client_gets_its_own_authorizer(ready: World) -> None:
    assert (await ready.token(OA, client="limited")).status_code == 200


async def test_revocation_makes_token_calls_410(ready: World) -> None:
    assert (await ready.token(OA)).status_code == 200
    revoke = await ready.sim.post(
        "/sim/authorizations/revoke", json={"component_appid": RETAIL["appid"], "authorizer_appid": OA}
    )
    assert revoke.status_code == 200
    await ready.services.authorizations.process_pending()
    ready.services.authorizations.forget_grants(OA)
    response = await ready.token(OA)
    assert (response.status_code, response.json()["error"]["code"]) == (410, "authorization_revoked")
    stored = await ready.services.store.authorizations.get("retail", OA)
    assert stored is not None and stored.status == "revoked" and stored.revoked_at is not None
    assert await ready.services.store.credentials.get(f"authorizer:retail:{OA}") is None


async def test_61023_recovers_the_refresh_token_from_the_authorizer_list(ready: World) -> None:
    assert (await ready.token(OA)).status_code == 200
    # The administrator authorizes again: WeChat issues a new refresh token; the old one lapses in 5 min.
    approval = await approve_authorization(ready.sim, RETAIL["appid"], RETAIL["secret"], OA, [1, 2, 24])
    assert approval["push"] is None  # same sets: WeChat pushes nothing, so the gateway does not know
    await ready.sim.post("/sim/clock/advance", json={"seconds": 301})
    await ready.expire_everything()
    await ready.reset_counters()
    response = await ready.token(OA)
    assert response.status_code == 200, response.text
    assert await ready.calls("api_get_authorizer_list") == 1
    assert await ready.calls("api_authorizer_token", OA) == 2  # refused, then with the recovered token
    assert (await ready.services.store.authorizations.get("retail", OA)).status == "active"  # type: ignore[union-attr]


async def test_61023_without_recovery_needs_reauthorization(ready: World) -> None:
    await ready.expire_everything()
    await ready.fault(endpoint="api_authorizer_token", errcode=61023, times=1)
    response = await ready.token(OA)
    assert (response.status_code, response.json()["error"]["code"]) == (409, "reauthorization_required")
    assert (await ready.services.store.authorizations.get("retail", OA)).status == "reauthorization_required"  # type: ignore[union-attr]
    await ready.reset_counters()
    ready.services.authorizations.forget_grants(OA)
    again = await ready.token(OA)
    assert again.status_code == 409  # not retried in a loop
    assert await ready.calls("api_authorizer_token") == 0


async def test_45009_opens_a_breaker(ready: World) -> None:
    await ready.expire_everything()
    await ready.fault(endpoint="api_authorizer_token", errcode=45009)
    await ready.reset_counters()
    first = await ready.token(OA)
    assert (first.status_code, first.json()["error"]["code"]) == (503, "wechat_quota_exhausted")
    for _ in range(5):
        again = await ready.token(OA)
        assert again.json()["error"]["code"] == "wechat_quota_exhausted"
    assert await ready.calls("api_authorizer_token") == 1


async def test_transient_errors_are_retried_with_bounded_backoff(ready: World) -> None:
    await ready.expire_everything()
    await ready.fault(endpoint="api_authorizer_token", errcode=-1, times=2)
    response = await ready.token(OA)
    assert response.status_code == 200
    assert await ready.calls("api_authorizer_token") == 3


async def test_wechat_down_gives_503_and_leaves_stored_tokens_alone(ready: World) -> None:
    assert (await ready.token(OA)).status_code == 200
    await ready.expire_everything()
    async with ready.services.store.engine.connect() as conn:
        before = (await conn.execute(text("SELECT key, value_sealed FROM credentials ORDER BY key"))).all()
    await ready.fault(endpoint="*", http_status=503)
    response = await ready.token(OA)
    assert (response.status_code, response.json()["error"]["code"]) == (503, "wechat_unavailable")
    async with ready.services.store.engine.connect() as conn:
        after = (await conn.execute(text("SELECT key, value_sealed FROM credentials ORDER BY key"))).all()
    assert after == before
    await ready.sim.delete("/sim/faults")
    assert (await ready.token(OA)).status_code == 200  # recovers as soon as WeChat does


async def test_a_lease_held_by_a_dead_replica_is_taken_over(ready: World) -> None:
    await ready.expire_everything()
    credentials = ready.services.store.credentials
    key = f"authorizer:retail:{OA}"
    assert await credentials.try_lease(key, "dead-replica", lease_s=1.0) is not None
    assert await credentials.try_lease(key, "someone-else", lease_s=1.0) is None  # held
    await ready.reset_counters()
    response = await ready.token(OA)
    assert response.status_code == 200
    assert await ready.calls("api_authorizer_token") == 1
    stored = await credentials.get(key)
    assert stored is not None and stored.lease_owner is None


async def test_background_renewal_happens_before_expiry(ready: World) -> None:
    old = (await ready.token(OA)).json()["access_token"]
    async with ready.services.store.engine.begin() as conn:
        await conn.execute(text("UPDATE credentials SET renew_after = 0"))
    await ready.reset_counters()
    renewed = await ready.services.tokens.renew_due()
    # retail's component and authorizer tokens, and finance's component token warmed from its ticket
    assert renewed == 3
    stored = await ready.services.store.credentials.get(f"authorizer:retail:{OA}")
    assert stored is not None and stored.value != old
    assert stored.renew_after is not None and stored.expires_at is not None
    assert 300 <= stored.expires_at - stored.renew_after <= 600  # margin of 5-10 minutes
    assert await ready.calls("api_authorizer_token") == 1
    assert await ready.calls("api_component_token") == 2
    assert await ready.services.tokens.renew_due() == 0  # nothing due any more


async def test_readyz_shows_the_component_token(ready: World) -> None:
    await ready.token(OA)
    platforms = {p["id"]: p for p in (await ready.gateway.get("/readyz")).json()["platforms"]}
    assert 7000 < platforms["retail"]["component_token_expires_in"] <= 7200
    assert platforms["retail"]["problem"] is None


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # replicas share PostgreSQL
async def test_two_gateways_on_one_database_fetch_once(
    ready: World, registry: Registry, database_url: str, secret_box: SecretBox
) -> None:
    sim_app = ready.sim._transport.app  # type: ignore[attr-defined]
    second = create_app(
        make_settings(database_url, secret_box),
        registry,
        transport=LateASGITransport(sim_app),
        background=False,
    )
    await ready.expire_everything()
    await ready.reset_counters()
    async with running(second) as other:
        headers = {"Authorization": f"Bearer {CLIENT_KEYS['crm']}"}
        responses = await asyncio.gather(
            *(ready.token(OA) for _ in range(40)),
            *(other.get(f"/v1/authorizers/{OA}/access-token", headers=headers) for _ in range(40)),
        )
    assert {r.status_code for r in responses} == {200}
    assert await ready.calls("api_component_token") == 1
    assert await ready.calls("api_authorizer_token") == 1


async def test_a_refused_ticket_waits_for_the_next_push(world: World) -> None:
    await push_ticket(world.sim, RETAIL["appid"])
    await world.fault(endpoint="api_component_token", errcode=61006, times=1)
    for _ in range(3):
        with pytest.raises(TicketMissing):
            await world.services.tokens.component_token("retail")
    assert await world.calls("api_component_token") == 1  # the same ticket is not offered again
    platforms = {p["id"]: p for p in (await world.gateway.get("/readyz")).json()["platforms"]}
    assert "refused the verify ticket" in platforms["retail"]["problem"]
    await push_ticket(world.sim, RETAIL["appid"])
    token = await world.services.tokens.component_token("retail")
    assert token.platform_id == "retail"
    assert await world.calls("api_component_token") == 2
    platforms = {p["id"]: p for p in (await world.gateway.get("/readyz")).json()["platforms"]}
    assert platforms["retail"]["problem"] is None


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # replicas share PostgreSQL
async def test_a_renewal_slower_than_its_lease_still_happens_once(
    ready: World, registry: Registry, database_url: str, secret_box: SecretBox
) -> None:
    sim_app = ready.sim._transport.app  # type: ignore[attr-defined]
    short_lease = msgspec.structs.replace(make_settings(database_url, secret_box), renewal_lease_s=1.0)
    first = create_app(short_lease, registry, transport=LateASGITransport(sim_app), background=False)
    second = create_app(short_lease, registry, transport=LateASGITransport(sim_app), background=False)
    await ready.expire_everything()
    await ready.fault(endpoint="api_authorizer_token", delay_s=2.5, times=1)
    await ready.reset_counters()
    headers = {"Authorization": f"Bearer {CLIENT_KEYS['crm']}"}
    path = f"/v1/authorizers/{OA}/access-token"
    async with running(first) as one, running(second) as two:
        slow = asyncio.create_task(one.get(path, headers=headers))
        await asyncio.sleep(0.5)  # the first holds the lease and waits on WeChat
        responses = await asyncio.gather(slow, *(two.get(path, headers=headers) for _ in range(5)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["access_token"] for r in responses}) == 1
    assert await ready.calls("api_authorizer_token") == 1

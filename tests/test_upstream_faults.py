"""WeChat failing in every way the simulator can inject, and the gateway coping (issue 8).

The simulator listens on a real loopback socket, in the test's own event loop, and the gateway reaches it
with its real upstream client, so a delay past the client's timeout is a real timeout and a closed port a
real refused connection. Timings are small: a 0.3 s upstream timeout, breakers that open after 5 faults
in a row for 30 s on a clock the tests move forward (so a slow machine never lets a cool-down lapse
early, and no test sleeps through one). For each fault: callers get the documented error, the stored
tokens stay as they were (read raw from the database), WeChat is called a bounded number of times (the
simulator's counters, or the gateway's own metrics when nothing reaches the simulator), and once the
fault clears one pass of the renewer (after the breaker's cool-down) brings everything back.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import pytest
from sqlalchemy import text

import gateway.container
import gateway.wechat.client
from gateway.container import Services
from gateway.credentials.tokens import STALE_RENEWAL_SPACING_S
from gateway.crypto import SecretBox
from gateway.errors import WeChatUnavailable
from gateway.http.app import create_app
from gateway.registry.model import Registry, parse_registry
from gateway.simulator import SimComponent, SimulatorConfig, create_simulator_app
from gateway.wechat.breaker import UpstreamBreakers
from tests.conftest import CLIENT_KEYS, PLATFORM_SECRETS, REGISTRY_YAML, make_settings, registry_environ
from tests.support.asgi import LateASGITransport, running
from tests.support.flows import push_ticket
from tests.support.servers import free_port, serve_in_loop
from tests.support.world import OA, World

TIMEOUT_S = 0.3
THRESHOLD = 5
COOLDOWN_S = 30.0
AUTHORIZER_KEY = f"authorizer:retail:{OA}"
ADMIN = {"Authorization": f"Bearer {CLIENT_KEYS['ops']}"}

# Faults that leave WeChat unable to answer usefully (the breaker's faults), as the simulator injects them.
TRANSPORT_FAULTS: dict[str, dict[str, Any]] = {
    "timeout": {"delay_s": TIMEOUT_S + 0.5},
    "http_5xx": {"http_status": 502},
    "errcode_-1": {"errcode": -1},
    "malformed_json": {"malformed": True},
}
# What an SDK sees of each on /wx while the breaker is closed (WeChat's answers pass through unchanged:
# HTTP status, errcode or None for no JSON), and whether it is a fault there. Proxied answers need not be
# JSON (images, files), so one that is not counts as an answer.
PROXIED: dict[str, tuple[int, int | None, bool]] = {
    "timeout": (504, -1, True),
    "http_5xx": (502, None, True),
    "errcode_-1": (200, -1, True),
    "malformed_json": (200, None, False),
}


def registry_at(api_base: str) -> Registry:
    return parse_registry(
        REGISTRY_YAML.replace("http://wechat.test", api_base),
        source="test-registry.yaml",
        environ=registry_environ(),
    )


@asynccontextmanager
async def open_upstream_world(
    database_url: str, secret_box: SecretBox, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[World]:
    """The simulator on a socket, the gateway in-process with its real upstream client; tickets pushed,
    OA authorized on retail (sets 1, 2, 24) and its token fetched once; counters reset."""
    monkeypatch.setattr(gateway.wechat.client, "UPSTREAM_TIMEOUT", httpx.Timeout(TIMEOUT_S))
    monkeypatch.setattr(gateway.wechat.client, "RETRY_BACKOFF_S", 0.02)
    monkeypatch.setattr(
        gateway.container, "UpstreamBreakers", functools.partial(UpstreamBreakers, clock=BREAKER_CLOCK)
    )
    to_gateway = LateASGITransport()
    simulator = create_simulator_app(
        SimulatorConfig(
            components=[
                SimComponent(
                    v["appid"],
                    v["secret"],
                    v["token"],
                    v["aes_key"],
                    f"http://gateway.test/wechat/{pid}/events",
                )
                for pid, v in PLATFORM_SECRETS.items()
            ],
            push_on_start=False,
            ticket_interval_s=0,
        ),
        push_transport=to_gateway,
    )
    async with serve_in_loop(simulator) as sim_url:
        settings = msgspec.structs.replace(
            make_settings(database_url, secret_box),
            upstream_breaker_threshold=THRESHOLD,
            upstream_breaker_cooldown_s=COOLDOWN_S,
        )
        app = create_app(settings, registry_at(sim_url), background=False)
        to_gateway.app = app
        async with running(app) as gateway_client, httpx.AsyncClient(base_url=sim_url) as sim:
            world = World(gateway_client, sim, app.state.services)
            for platform in ("retail", "finance"):
                assert (await push_ticket(sim, PLATFORM_SECRETS[platform]["appid"]))["body"] == "success"
            await world.authorize("retail", OA, [1, 2, 24])
            assert (await world.token(OA)).status_code == 200
            await world.services.tokens.renew_due()  # finance's component token too: nothing left to warm
            await world.reset_counters()
            yield world


@pytest.fixture
async def upstream(
    sqlite_url: str, secret_box: SecretBox, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[World]:
    async with open_upstream_world(sqlite_url, secret_box, monkeypatch) as world:
        yield world


@pytest.fixture
async def upstream_pg(
    postgres_database: str, secret_box: SecretBox, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[World]:
    from tests.conftest import _reset_postgres

    await _reset_postgres(postgres_database)
    async with open_upstream_world(postgres_database, secret_box, monkeypatch) as world:
        yield world


# --- helpers ------------------------------------------------------------------------------------------


class Row(msgspec.Struct, frozen=True):
    key: str
    value_sealed: str | None
    expires_at: float | None
    renew_after: float | None
    fetched_at: float | None


async def stored(world: World, key: str = AUTHORIZER_KEY) -> Row:
    """A credential row as the database holds it (the sealed value, not opened)."""
    query = text(
        "SELECT key, value_sealed, expires_at, renew_after, fetched_at FROM credentials WHERE key = :k"
    )
    async with world.services.store.engine.connect() as conn:
        row = (await conn.execute(query, {"k": key})).one()
    return Row(*row)


async def refresh_token_sealed(world: World) -> str:
    async with world.services.store.engine.connect() as conn:
        value: str = (
            await conn.execute(
                text("SELECT refresh_token_sealed FROM authorizations WHERE authorizer_appid = :a"), {"a": OA}
            )
        ).scalar_one()
    return value


async def set_row(world: World, *, expires_at: float | None = None) -> None:
    """Make OA's token due for renewal (and, with ``expires_at``, expired) in the gateway's store only."""
    async with world.services.store.engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE credentials SET renew_after = 0, expires_at = COALESCE(:e, expires_at) WHERE key = :k"
            ),
            {"e": expires_at, "k": AUTHORIZER_KEY},
        )
    world.services.tokens._cache.clear()


def metric(services: Services, name: str, **labels: str) -> float:
    return services.metrics.registry.get_sample_value(name, labels) or 0.0


def breaker(services: Services, family: str = "authorizer_token", platform: str = "retail") -> float:
    return metric(services, "gateway_upstream_breaker_state", platform=platform, family=family)


def transitions(services: Services, state: str, family: str = "authorizer_token") -> float:
    return metric(
        services, "gateway_upstream_breaker_transitions_total", platform="retail", family=family, state=state
    )


async def refusals(world: World, n: int, kind: str = "access-token") -> Sequence[tuple[int, str]]:
    """``n`` token requests one after the other: (status, error code) of each."""
    answers = []
    for _ in range(n):
        response = await world.token(OA, kind=kind)
        answers.append((response.status_code, response.json().get("error", {}).get("code", "")))
    return answers


async def sdk_token(world: World) -> str:
    """A gateway token for OA, as an SDK gets it on /wx."""
    response = await world.gateway.get(
        "/wx/cgi-bin/token",
        params={"grant_type": "client_credential", "appid": OA, "secret": CLIENT_KEYS["crm"]},
    )
    token: str = response.json()["access_token"]
    return token


async def user_get(world: World, sdk: str) -> httpx.Response:
    return await world.gateway.get("/wx/cgi-bin/user/get", params={"access_token": sdk})


class ShiftedClock:
    """The monotonic clock plus however far the tests have moved it on."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


BREAKER_CLOCK = ShiftedClock()


async def after_cool_down() -> None:
    BREAKER_CLOCK.offset += COOLDOWN_S + 0.1


# --- faults that open the breaker -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(TRANSPORT_FAULTS))
async def test_transport_faults_open_the_breaker_and_recover_in_one_renewal_pass(
    upstream: World, kind: str
) -> None:
    world, services = upstream, upstream.services
    served = (await world.token(OA)).json()["access_token"]
    await set_row(world)  # due for renewal, still valid
    await world.fault(endpoint="api_authorizer_token", **TRANSPORT_FAULTS[kind])
    due = await stored(world)

    await services.tokens.renew_due()  # the renewer meets the fault: three attempts, then it gives up

    assert await world.calls("api_authorizer_token") == 3
    assert await stored(world) == due  # the good token stands...
    still = await world.token(OA)
    assert (still.status_code, still.json()["access_token"]) == (200, served)  # ...and is still served

    await set_row(world, expires_at=1)  # now it has expired: callers need WeChat
    expired = await stored(world)
    assert await refusals(world, 1) == [(503, "wechat_unavailable")]
    assert await world.calls("api_authorizer_token") == THRESHOLD  # two more attempts opened the breaker
    assert breaker(services) == 1 and transitions(services, "open") == 1

    assert await refusals(world, 5) == [(503, "wechat_unavailable")] * 5
    assert await world.calls("api_authorizer_token") == THRESHOLD  # failed fast, without calling WeChat
    assert await stored(world) == expired
    assert breaker(services, "component_token") == 0  # other families are not held
    exposition = (await world.gateway.get("/metrics")).text
    assert 'gateway_upstream_breaker_state{family="authorizer_token",platform="retail"} 1.0' in exposition

    await world.sim.delete("/sim/faults")
    await after_cool_down()
    await world.reset_counters()
    await services.tokens.renew_due()  # one renewer pass: the trial call, and everything due renewed

    assert await world.calls("api_authorizer_token") == 1
    assert breaker(services) == 0
    assert (transitions(services, "half_open"), transitions(services, "closed")) == (1, 1)
    renewed = await stored(world)
    assert renewed.value_sealed != expired.value_sealed and renewed.expires_at > time.time() + 7000  # type: ignore[operator]
    fresh = await world.token(OA)
    assert fresh.status_code == 200 and fresh.json()["access_token"] != served
    users = await world.sim.get("/cgi-bin/user/get", params={"access_token": fresh.json()["access_token"]})
    assert users.json().get("errcode", 0) == 0  # and WeChat takes it

    # The same fault on a call proxied on /wx: passed through as it comes, then failed fast.
    status, errcode, is_fault = PROXIED[kind]
    sdk = await sdk_token(world)
    await world.fault(endpoint="user/get", **TRANSPORT_FAULTS[kind])
    await world.reset_counters()
    for _ in range(THRESHOLD):
        answer = await user_get(world, sdk)
        assert answer.status_code == status
        assert errcode is None or answer.json()["errcode"] == errcode
    assert breaker(services, "proxy:cgi-bin/user") == int(is_fault)
    if is_fault:
        for _ in range(3):
            fast = await user_get(world, sdk)
            assert (fast.status_code, fast.json()["errcode"]) == (502, -1)
            assert "paused" in fast.json()["errmsg"]
        assert await world.calls("user/get") == THRESHOLD
        assert (await world.token(OA)).status_code == 200  # the token API is another family
    await world.sim.delete("/sim/faults")
    await after_cool_down()
    assert (await user_get(world, sdk)).json()["total"] >= 1
    assert breaker(services, "proxy:cgi-bin/user") == 0


async def test_refused_connections_open_the_breaker_and_recover(upstream: World) -> None:
    world, services = upstream, upstream.services
    working = services.registry.current
    services.registry.swap(registry_at(f"http://127.0.0.1:{free_port()}"))  # nothing listens there
    await set_row(world, expires_at=1)
    expired = await stored(world)

    def attempts() -> float:
        return metric(
            services, "gateway_wechat_calls_total", api="api_authorizer_token", errcode="unreachable"
        )

    assert await refusals(world, 2) == [(503, "wechat_unavailable")] * 2
    assert attempts() == THRESHOLD and breaker(services) == 1
    assert await refusals(world, 5) == [(503, "wechat_unavailable")] * 5
    assert attempts() == THRESHOLD  # failed fast
    assert await stored(world) == expired

    services.registry.swap(working)  # WeChat reachable again
    await after_cool_down()
    await services.tokens.renew_due()
    assert breaker(services) == 0
    assert await world.calls("api_authorizer_token") == 1
    assert (await world.token(OA)).status_code == 200


async def test_other_families_have_breakers_of_their_own(upstream: World) -> None:
    world, services = upstream, upstream.services
    await world.fault(endpoint="ticket/getticket", http_status=503)
    assert await refusals(world, 3, kind="jsapi-ticket") == [(503, "wechat_unavailable")] * 3
    assert await world.calls("ticket/getticket") == THRESHOLD
    assert breaker(services, "jsapi_ticket") == 1 and breaker(services) == 0

    # Authorization links (pre-auth codes): the documented 503, never an internal error.
    await world.fault(endpoint="api_create_preauthcode", errcode=-1)
    onboarding = {"Authorization": f"Bearer {CLIENT_KEYS['onboarding']}"}

    async def link() -> httpx.Response:
        return await world.gateway.post(
            "/v1/platforms/retail/authorization-links", json={"auth_type": 3}, headers=onboarding
        )

    for _ in range(3):
        refused = await link()
        assert (refused.status_code, refused.json()["error"]["code"]) == (503, "wechat_unavailable")
    assert await world.calls("api_create_preauthcode") == THRESHOLD
    assert breaker(services, "authorization") == 1

    # Open-account calls go with an authorizer token alone: they count under the platform that served it.
    await world.fault(endpoint="open/get", http_status=502)
    for _ in range(2):
        with pytest.raises(WeChatUnavailable):
            await services.binding.check(OA)
    assert breaker(services, "open_account") == 1 and breaker(services, "open_account", platform="*") == 0

    await world.sim.delete("/sim/faults")
    await after_cool_down()
    assert (await world.token(OA, kind="jsapi-ticket")).status_code == 200
    assert (await link()).status_code == 200
    await services.binding.check(OA)
    assert breaker(services, "jsapi_ticket") == breaker(services, "authorization") == 0
    assert breaker(services, "open_account") == 0


async def test_a_reload_to_another_api_host_closes_the_breakers(upstream: World) -> None:
    world, services = upstream, upstream.services
    await world.fault(endpoint="ticket/getticket", http_status=503)
    assert await refusals(world, 2, kind="jsapi-ticket") == [(503, "wechat_unavailable")] * 2
    assert breaker(services, "jsapi_ticket") == 1
    await world.sim.delete("/sim/faults")
    current = services.registry.current.wechat.api_base

    # A reload that leaves WeChat's host as it was leaves the breakers as they are...
    services.registry.swap(registry_at(current))
    assert breaker(services, "jsapi_ticket") == 1
    assert await refusals(world, 1, kind="jsapi-ticket") == [(503, "wechat_unavailable")]
    assert await world.calls("ticket/getticket") == THRESHOLD

    # ...and one to another host (the same simulator by another name) closes them, before any cool-down.
    services.registry.swap(registry_at(current.replace("127.0.0.1", "localhost")))
    assert breaker(services, "jsapi_ticket") == 0
    assert (await world.token(OA, kind="jsapi-ticket")).status_code == 200


# --- WeChat's refusals: handled where they mean something, never the breaker ------------------------------


async def test_45009_pauses_that_token_until_the_quota_is_cleared(upstream: World) -> None:
    world, services = upstream, upstream.services
    await set_row(world, expires_at=1)
    expired = await stored(world)
    await world.fault(endpoint="api_authorizer_token", errcode=45009)

    assert await refusals(world, 6) == [(503, "wechat_quota_exhausted")] * 6
    await services.tokens.renew_due()
    assert await world.calls("api_authorizer_token") == 1  # surfaced, not hammered
    assert await stored(world) == expired
    assert breaker(services) == 0  # WeChat answered: not a transport fault
    await world.sim.delete("/sim/faults")
    assert await refusals(world, 1) == [(503, "wechat_quota_exhausted")]  # until cleared or the day turns
    assert await world.calls("api_authorizer_token") == 1

    cleared = await world.gateway.post("/v1/platforms/retail/clear-quota", json=None, headers=ADMIN)
    assert cleared.status_code == 200
    await services.tokens.renew_due()
    assert await world.calls("api_authorizer_token") == 2
    assert (await world.token(OA)).status_code == 200


async def test_61023_asks_for_reauthorization_once_and_keeps_the_refresh_token(upstream: World) -> None:
    world, services = upstream, upstream.services
    await set_row(world, expires_at=1)
    expired, refresh = await stored(world), await refresh_token_sealed(world)
    await world.fault(endpoint="api_authorizer_token", errcode=61023)

    assert await refusals(world, 5) == [(409, "reauthorization_required")] * 5
    await services.tokens.renew_due()
    assert await world.calls("api_authorizer_token") == 1  # never retried in a loop
    assert await world.calls("api_get_authorizer_list") == 1  # one look for a newer refresh token
    assert (await stored(world), await refresh_token_sealed(world)) == (expired, refresh)
    assert breaker(services) == 0

    await world.sim.delete("/sim/faults")
    await world.authorize("retail", OA, [1, 2, 24, 15])  # the administrator authorizes again
    await services.tokens.renew_due()
    assert (await world.token(OA)).status_code == 200


async def test_a_40001_storm_renews_each_token_once_and_recovers(upstream: World) -> None:
    world, services = upstream, upstream.services
    await set_row(world, expires_at=1)
    expired = await stored(world)
    component = await stored(world, "component:retail")
    await world.fault(endpoint="api_authorizer_token", errcode=40001)

    storm = await asyncio.gather(*(world.token(OA) for _ in range(20)))
    assert {(r.status_code, r.json()["error"]["code"]) for r in storm} == {(503, "wechat_unavailable")}
    assert "40001" in storm[0].json()["error"]["message"]
    # one renewal for everyone: the component token renewed once (as WeChat asks), the call retried once
    assert await world.calls("api_component_token") == 1
    assert await world.calls("api_authorizer_token") == 2
    renewed_component = await stored(world, "component:retail")
    assert renewed_component.value_sealed != component.value_sealed

    # WeChat refuses the renewed component token too: its replacement is renewed again only when the
    # spacing ends (the callers wait for it), once for all of them, and the call is retried once.
    started = time.monotonic()
    again = await asyncio.gather(*(world.token(OA) for _ in range(5)))
    assert {(r.status_code, r.json()["error"]["code"]) for r in again} == {(503, "wechat_unavailable")}
    assert time.monotonic() - started < STALE_RENEWAL_SPACING_S + 2
    assert await world.calls("api_component_token") == 2
    assert await world.calls("api_authorizer_token") == 2 + 2
    assert await stored(world) == expired
    assert await stored(world, "component:retail") != renewed_component
    assert breaker(services) == 0

    await world.sim.delete("/sim/faults")
    await services.tokens.renew_due()
    assert (await world.token(OA)).status_code == 200
    assert await world.calls("api_component_token") == 2
    assert await world.calls("api_authorizer_token") == 2 + 2 + 1

    # On /wx, WeChat calling the authorizer's token stale: the same, and its answer passes through.
    sdk = await sdk_token(world)
    await world.fault(endpoint="user/get", errcode=40001)
    await world.reset_counters()
    storm = await asyncio.gather(*(user_get(world, sdk) for _ in range(10)))
    assert {r.json()["errcode"] for r in storm} == {40001}
    assert await world.calls("api_authorizer_token") == 1
    assert await world.calls("user/get") == 20  # each sent again once, with the renewed token
    # The renewed token refused too: renewed again once the spacing ends, once for all, each sent again.
    again = await asyncio.gather(*(user_get(world, sdk) for _ in range(5)))
    assert {r.json()["errcode"] for r in again} == {40001}
    assert await world.calls("api_authorizer_token") == 2
    assert await world.calls("user/get") == 30
    await world.sim.delete("/sim/faults")
    assert (await user_get(world, sdk)).json()["total"] >= 1
    assert breaker(services, "proxy:cgi-bin/user") == 0


# --- PostgreSQL -------------------------------------------------------------------------------------------


async def test_on_postgresql_a_dead_wechat_leaves_stored_tokens_alone(upstream_pg: World) -> None:
    world, services = upstream_pg, upstream_pg.services
    served = (await world.token(OA)).json()["access_token"]
    await set_row(world)
    due = await stored(world)
    await world.fault(endpoint="*", http_status=503)

    await services.tokens.renew_due()
    assert (await world.token(OA)).json()["access_token"] == served
    await set_row(world, expires_at=1)
    expired = await stored(world)
    assert await refusals(world, 4) == [(503, "wechat_unavailable")] * 4
    assert await world.calls("api_authorizer_token") == THRESHOLD
    assert await stored(world) == expired != due

    await world.sim.delete("/sim/faults")
    await after_cool_down()
    await services.tokens.renew_due()
    assert breaker(services) == 0
    assert (await world.token(OA)).status_code == 200

"""Tokens nobody uses are not kept warm (SPEC §7): the renewer renews ahead of expiry only credentials
used within the warm window; an idle one lapses and is fetched on demand by its next caller.

Time moves: the gateway runs on a clock of the test's and the simulator's clock is advanced with it, so
tokens really expire at WeChat; the renewer is driven a pass at a time (``renew_due``).
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from alembic import command
from sqlalchemy import inspect, text

from gateway.credentials.tokens import DEFAULT_WARM_WINDOW_S
from gateway.crypto import SecretBox
from gateway.errors import ConfigError
from gateway.http.app import create_app
from gateway.registry.model import Registry
from gateway.settings import Settings
from gateway.store import Store, create_engine
from gateway.store.migrate import alembic_config, upgrade
from tests.conftest import CLIENT_KEYS, make_settings
from tests.support.asgi import LateASGITransport, running
from tests.support.flows import push_ticket
from tests.support.world import FINANCE, OA, OA2, RETAIL, World, open_world

SECRET = base64.b64encode(os.urandom(32)).decode()
WINDOW = DEFAULT_WARM_WINDOW_S  # what the test apps run with (make_settings: the defaults)
LIFETIME = 7200.0  # the simulator's authorizer tokens, as WeChat's
KEY = f"authorizer:retail:{OA}"


class Clock:
    """The gateway's time: real time plus how far the test moved it."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class Timed:
    """A world whose time the test moves."""

    def __init__(self, world: World, clock: Clock) -> None:
        self.world = world
        self.clock = clock

    @property
    def tokens(self) -> Any:
        return self.world.services.tokens

    async def advance(self, seconds: float) -> None:
        """Move both clocks; WeChat keeps pushing verify tickets meanwhile (the gateway refuses to mint a
        component token from one older than 12 h)."""
        self.clock.offset += seconds
        (await self.world.sim.post("/sim/clock/advance", json={"seconds": seconds})).raise_for_status()
        for values in (RETAIL, FINANCE):
            assert (await push_ticket(self.world.sim, values["appid"]))["body"] == "success"

    async def run_for(self, seconds: float, step: float = 300.0) -> None:
        """``seconds`` of time, the renewer running a pass every ``step``."""
        for _ in range(round(seconds / step)):
            await self.advance(step)
            await self.tokens.renew_due()

    async def fetches(self, appid: str = OA) -> int:
        """Tokens WeChat issued for ``appid`` (a call refused for a component token that a concurrent
        renewal just replaced is retried, and not counted here)."""
        counter = (await self.world.counters()).get("api_authorizer_token", {})
        return int(counter.get("ok_by_key", {}).get(appid, 0))

    async def fetch_untracked(self, appid: str = OA) -> None:
        """The token stored, as a background job would leave it: fetched, never used by a caller."""
        with self.tokens.untracked():
            await self.tokens.authorizer_token("retail", appid)
        self.tokens._cache.clear()


@pytest.fixture
async def timed(registry: Registry, database_url: str, secret_box: SecretBox) -> AsyncIterator[Timed]:
    clock = Clock()
    async with open_world(registry, database_url, secret_box, clock=clock) as world:
        for values in (RETAIL, FINANCE):
            assert (await push_ticket(world.sim, values["appid"]))["body"] == "success"
        await world.authorize("retail", OA, [1, 2, 24])
        # The authorization stores the token api_query_auth returned, unused; these tests start with none
        # stored, so that every token they count is one the gateway fetched.
        await world.services.tokens.forget_authorizer("retail", OA)
        await world.reset_counters()
        yield Timed(world, clock)


async def test_a_used_token_is_renewed_ahead_of_expiry_and_an_idle_one_lapses(timed: Timed) -> None:
    world = timed.world
    first = (await world.token(OA)).json()["access_token"]
    assert await timed.fetches() == 1
    # Within the window: renewed ahead of expiry, so callers never meet an expired token.
    await timed.run_for(LIFETIME - 200)
    assert await timed.fetches() == 2
    stored = await world.services.store.credentials.get(KEY)
    assert stored is not None and stored.value != first and stored.expires_at is not None
    assert stored.expires_at > timed.clock() + LIFETIME - 1000
    # Nobody asks any more: once the last use is a window old, no renewal; the token lapses.
    await timed.run_for(WINDOW + LIFETIME)
    renewals = await timed.fetches()
    assert renewals <= 2 + WINDOW / (LIFETIME - 600) + 1
    await timed.run_for(86400, step=1800)
    assert await timed.fetches() == renewals  # a whole idle day: no api_authorizer_token call
    stored = await world.services.store.credentials.get(KEY)
    assert stored is not None and not stored.valid_at(timed.clock())
    # The next caller gets it on demand (once, whatever the crowd), and it is warm again.
    responses = [await world.token(OA) for _ in range(3)]
    assert {r.status_code for r in responses} == {200}, responses[0].text
    assert len({r.json()["access_token"] for r in responses}) == 1
    assert await timed.fetches() == renewals + 1
    await timed.run_for(LIFETIME - 200)
    assert await timed.fetches() == renewals + 2


async def test_a_wx_proxy_call_marks_the_token_used(timed: Timed) -> None:
    world = timed.world
    await timed.fetch_untracked()
    await timed.run_for(LIFETIME - 300)
    assert await timed.fetches() == 1  # never used: not renewed
    gateway_token = (
        await world.gateway.get(
            "/wx/cgi-bin/token",
            params={"grant_type": "client_credential", "appid": OA, "secret": CLIENT_KEYS["crm"]},
        )
    ).json()["access_token"]
    users = await world.gateway.get("/wx/cgi-bin/user/get", params={"access_token": gateway_token})
    assert users.json().get("errcode", 0) == 0, users.text
    assert await timed.fetches() == 1  # the stored token, still valid, served the call
    await timed.run_for(600)
    assert await timed.fetches() == 2  # used: renewed before it expired


async def test_a_token_answered_from_memory_is_marked_used(timed: Timed) -> None:
    world = timed.world
    await timed.fetch_untracked()
    await world.token(OA)  # a first request reads the grants and the token into memory
    await timed.tokens.flush_uses()
    async with world.services.store.engine.begin() as conn:
        await conn.execute(text("UPDATE credentials SET used_at = NULL"))
    timed.tokens._used.clear()
    timed.tokens._flushed.clear()
    await world.token(OA)  # answered from memory, through the fast lane
    assert await timed.tokens.flush_uses() == 1
    stored = await world.services.store.credentials.get(KEY)
    assert stored is not None and stored.used_at is not None
    assert stored.used_at > timed.clock() - 120


async def test_uses_reach_the_store_in_batches_not_per_request(timed: Timed) -> None:
    world = timed.world
    tokens = timed.tokens
    await world.token(OA)
    assert await tokens.flush_uses() == 1
    for _ in range(5):
        await world.token(OA)
    assert await tokens.flush_uses() == 0  # within the resolution of the last write: nothing written
    await timed.advance(tokens.use_resolution)
    await world.token(OA)
    assert await tokens.flush_uses() == 1


async def test_a_catalog_sync_does_not_keep_an_idle_token_warm(timed: Timed) -> None:
    world = timed.world
    summary = await world.services.catalog_sync.run()
    assert summary.bindings == {"unbound": 1}  # open/get, with an authorizer token
    assert await timed.fetches() == 1
    await timed.run_for(LIFETIME - 300)
    assert await timed.fetches() == 1  # the sync's use kept nothing warm
    await timed.run_for(6 * 3600 - LIFETIME + 300)
    await world.reset_counters()
    # The next sync: the binding was read lately and the token lapsed, so it is kept, costing no token.
    summary = await world.services.catalog_sync.run()
    assert (summary.bindings, summary.bindings_kept) == ({}, 1)
    assert await timed.fetches() == 0
    assert await world.calls("open/get") == 0
    await timed.run_for(LIFETIME, step=1800)
    assert await timed.fetches() == 0
    # A week on, the binding is read again (one token fetched for it), and still nothing is kept warm.
    await timed.run_for(7 * 86400, step=6 * 3600)
    summary = await world.services.catalog_sync.run()
    assert (summary.bindings, summary.bindings_kept) == ({"unbound": 1}, 0)
    assert await timed.fetches() == 1
    await timed.run_for(LIFETIME, step=600)
    assert await timed.fetches() == 1


async def test_a_catalog_sync_reads_the_binding_of_an_account_in_use(timed: Timed) -> None:
    world = timed.world
    await world.services.catalog_sync.run()
    await world.reset_counters()
    await world.token(OA)  # in use: warm, so reading its binding costs no token call
    await timed.run_for(6 * 3600, step=600)
    await world.token(OA)
    fetched = await timed.fetches()
    summary = await world.services.catalog_sync.run()
    assert (summary.bindings, summary.bindings_kept) == ({"unbound": 1}, 0)
    assert await world.calls("open/get") == 1
    assert await timed.fetches() == fetched


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # replicas share PostgreSQL
async def test_a_use_counts_on_every_replica(
    timed: Timed, registry: Registry, database_url: str, secret_box: SecretBox
) -> None:
    world = timed.world
    await world.authorize("retail", OA2, [1, 2])
    await world.services.tokens.forget_authorizer("retail", OA2)  # as the fixture does for OA
    await world.token(OA)  # used, through the first replica
    await timed.fetch_untracked(OA2)  # never used
    await world.services.tokens.flush_uses()
    sim_app = world.sim._transport.app  # type: ignore[attr-defined]
    second = create_app(
        make_settings(database_url, secret_box),
        registry,
        clock=timed.clock,
        transport=LateASGITransport(sim_app),
        background=False,
    )
    async with running(second):
        other = second.state.services.tokens
        for _ in range(round((LIFETIME - 200) / 300)):  # only the second replica's renewer runs
            await timed.advance(300)
            await other.renew_due()
    assert await timed.fetches(OA) == 2
    assert await timed.fetches(OA2) == 1


async def test_the_store_keeps_the_latest_use_and_filters_due_keys(store: Store) -> None:
    credentials = store.credentials
    for key in ("component:retail", f"authorizer:retail:{OA}", f"authorizer:retail:{OA2}", "jsapi:retail:x"):
        assert await credentials.try_lease(key, "me", 30) is not None
        assert await credentials.save(key, "me", "v", expires_at=2000.0, renew_after=1000.0)
    await credentials.mark_used({f"authorizer:retail:{OA}": 500.0, "jsapi:retail:x": 100.0, "nope": 1.0})
    await credentials.mark_used({f"authorizer:retail:{OA}": 400.0})  # an older use changes nothing
    stored = await credentials.get(f"authorizer:retail:{OA}")
    assert stored is not None and stored.used_at == 500.0
    assert await credentials.get("nope") is None
    everything = await credentials.due(1500.0)
    assert len(everything) == 4
    warm = await credentials.due(1500.0, used_since=300.0, always=("component:",))
    assert sorted(warm) == ["authorizer:retail:" + OA, "component:retail"]
    assert await credentials.valid_keys("authorizer:", 1500.0) == {
        f"authorizer:retail:{OA}",
        f"authorizer:retail:{OA2}",
    }
    assert await credentials.valid_keys("authorizer:", 2500.0) == set()


async def test_the_migration_counts_existing_tokens_used_at_the_upgrade(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade(engine, "0009")
        async with engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO credentials (key, expires_at, renew_after) VALUES ('component:x', 1, 0)")
            )
        before = time.time()
        await upgrade(engine)
        async with engine.connect() as conn:
            used_at = (await conn.execute(text("SELECT used_at FROM credentials"))).scalar_one()
        assert before - 1 <= used_at <= time.time() + 1
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: command.downgrade(alembic_config(sync), "0009"))
        async with engine.connect() as conn:
            columns = await conn.run_sync(
                lambda sync: {c["name"] for c in inspect(sync).get_columns("credentials")}
            )
        assert "used_at" not in columns and "expires_at" in columns
        await upgrade(engine)
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("GATEWAY_TOKEN_WARM_WINDOW_S", "soon", "GATEWAY_TOKEN_WARM_WINDOW_S must be a number"),
        ("GATEWAY_TOKEN_WARM_WINDOW_S", "60", "at least 600 seconds"),
        ("GATEWAY_TOKEN_WARM_WINDOW_S", "nan", "GATEWAY_TOKEN_WARM_WINDOW_S must be a number"),
        ("GATEWAY_BINDING_RECHECK_S", "-1", "GATEWAY_BINDING_RECHECK_S must be 0"),
        ("GATEWAY_BINDING_RECHECK_S", "inf", "GATEWAY_BINDING_RECHECK_S must be 0"),
    ],
)
def test_bad_windows_are_refused_by_name(variable: str, value: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        Settings.from_environ({"GATEWAY_SECRET_KEY": SECRET, variable: value})


def test_the_windows_default_and_inf_keeps_everything_warm() -> None:
    settings = Settings.from_environ({"GATEWAY_SECRET_KEY": SECRET})
    assert (settings.token_warm_window_s, settings.binding_recheck_s) == (6 * 3600.0, 7 * 86400.0)
    settings = Settings.from_environ({"GATEWAY_SECRET_KEY": SECRET, "GATEWAY_TOKEN_WARM_WINDOW_S": "inf"})
    assert settings.token_warm_window_s == float("inf")

"""The gateway and the simulator wired to each other in-process (both over ASGI), as pytest fixtures.

``world``: both apps running, tickets not yet pushed. ``ready``: tickets pushed on both platforms and
OA (``wxa0000000000001``) authorized on retail with sets 1, 2, 24; the simulator's counters reset.
``stocked``: the catalog of ``ready`` plus OA on finance, a mini program, and a revoked account.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import text

from gateway.container import Services
from gateway.crypto import SecretBox
from gateway.http.app import create_app
from gateway.registry.model import Registry
from gateway.settings import Settings
from gateway.simulator import SimComponent, SimulatorConfig, create_simulator_app
from tests.conftest import CLIENT_KEYS, PLATFORM_SECRETS, make_settings
from tests.support.asgi import LateASGITransport, running
from tests.support.flows import approve_authorization, push_ticket

__all__ = [
    "FINANCE",
    "MINI",
    "OA",
    "OA2",
    "OTHER",
    "RETAIL",
    "World",
    "open_world",
    "ready",
    "stocked",
    "world",
]

OA = "wxa0000000000001"  # an official account
OA2 = "wxb0000000000002"
MINI = "wxc0000000000003"  # a mini program
OTHER = "wxd0000000000004"
RETAIL = PLATFORM_SECRETS["retail"]
FINANCE = PLATFORM_SECRETS["finance"]


class World:
    """The gateway and the simulator wired to each other, with shortcuts for the usual steps."""

    def __init__(self, gateway: httpx.AsyncClient, sim: httpx.AsyncClient, services: Services) -> None:
        self.gateway = gateway
        self.sim = sim
        self.services = services

    async def token(self, appid: str, client: str = "crm", kind: str = "access-token") -> httpx.Response:
        headers = {"Authorization": f"Bearer {CLIENT_KEYS[client]}"}
        return await self.gateway.get(f"/v1/authorizers/{appid}/{kind}", headers=headers)

    async def authorize(self, platform: str, appid: str, func_ids: list[int], **kwargs: Any) -> None:
        """Authorize through the simulator and wait until the gateway has acted on the push."""
        values = PLATFORM_SECRETS[platform]
        await approve_authorization(self.sim, values["appid"], values["secret"], appid, func_ids, **kwargs)
        for _ in range(50):
            await self.services.authorizations.process_pending()
            if await self.services.store.authorizations.get(platform, appid) is not None:
                self.services.authorizations.forget_grants(appid)
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"the gateway never stored the authorization of {platform} by {appid}")

    async def counters(self) -> dict[str, Any]:
        counters: dict[str, Any] = (await self.sim.get("/sim/counters")).json()
        return counters

    async def calls(self, endpoint: str, key: str | None = None) -> int:
        counter = (await self.counters()).get(endpoint, {"total": 0, "by_key": {}})
        return int(counter["total"] if key is None else counter["by_key"].get(key, 0))

    async def reset_counters(self) -> None:
        await self.sim.post("/sim/counters/reset")

    async def fault(self, **fault: Any) -> None:
        (await self.sim.post("/sim/faults", json=fault)).raise_for_status()

    async def expire_everything(self) -> None:
        """Expire every token at WeChat and in the gateway's store, as if two hours had passed."""
        await self.sim.post("/sim/expire", json={"what": "all"})
        async with self.services.store.engine.begin() as conn:
            await conn.execute(text("UPDATE credentials SET expires_at = 1, renew_after = 0"))
        self.services.tokens._cache.clear()


@asynccontextmanager
async def open_world(
    registry: Registry,
    database_url: str,
    secret_box: SecretBox,
    *,
    settings: Settings | None = None,
    **app_options: Any,
) -> AsyncIterator[World]:
    """The gateway of ``registry`` (``create_app`` options in ``app_options``; ``settings`` instead of the
    tests' defaults) and the simulator, each other's network, both running."""
    to_gateway, to_simulator = LateASGITransport(), LateASGITransport()
    settings = settings or make_settings(database_url, secret_box)
    simulator = create_simulator_app(
        SimulatorConfig(
            components=[
                SimComponent(
                    v["appid"],
                    v["secret"],
                    v["token"],
                    v["aes_key"],
                    f"http://gateway.test/wechat/{pid}/events",
                    message_url=f"http://gateway.test/wechat/{pid}/messages/$APPID$",
                    # 授权发起页域名: the gateway's public host, where its start page is
                    auth_domain=urlsplit(settings.public_url).netloc,
                )
                for pid, v in PLATFORM_SECRETS.items()
            ],
            push_on_start=False,
            ticket_interval_s=0,
        ),
        push_transport=to_gateway,
    )
    app = create_app(
        settings,
        registry,
        transport=to_simulator,
        **({"background": False} | app_options),
    )
    to_gateway.app, to_simulator.app = app, simulator
    async with running(simulator) as sim, running(app) as gateway:
        services: Services = app.state.services
        yield World(gateway, sim, services)


@pytest.fixture
async def world(registry: Registry, database_url: str, secret_box: SecretBox) -> AsyncIterator[World]:
    async with open_world(registry, database_url, secret_box) as opened:
        yield opened


@pytest.fixture
async def ready(world: World) -> World:
    """Tickets on both platforms, and OA authorized on retail with sets 1, 2, 24."""
    for values in (RETAIL, FINANCE):
        assert (await push_ticket(world.sim, values["appid"]))["body"] == "success"
    await world.authorize("retail", OA, [1, 2, 24])
    await world.reset_counters()
    return world


@pytest.fixture
async def stocked(ready: World) -> World:
    """OA on retail (1, 2, 24) and finance (15); a mini program on retail; another account, revoked."""
    await ready.authorize("finance", OA, [15])
    await ready.authorize(
        "retail", MINI, [17, 18, 25], kind="mini_program", nick_name="Shop", principal_name="Shop Co"
    )
    await ready.authorize("finance", OTHER, [1], nick_name="Old = Account", principal_name="Gone Ltd")
    await ready.sim.post(
        "/sim/authorizations/revoke", json={"component_appid": FINANCE["appid"], "authorizer_appid": OTHER}
    )
    await ready.services.authorizations.process_pending()
    return ready

"""The simulator in-process: its lifespan running, pushes captured by an httpx.MockTransport.

Litestar's AsyncTestClient runs the lifespan in a task of its own, which an async fixture needs: its
setup and teardown run in different tasks, and the lifespan's task group must be left where it was entered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from litestar.testing import AsyncTestClient

from gateway.simulator import SimulatorConfig, create_simulator_app
from tests.simulator.helpers import FINANCE, RETAIL, Clock, Inbox, Sim


@pytest.fixture
def inbox() -> Inbox:
    return Inbox()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def sim(inbox: Inbox, clock: Clock) -> AsyncIterator[Sim]:
    """Two components, no ticket schedule: tests push tickets when they need them."""
    config = SimulatorConfig(components=[RETAIL, FINANCE], ticket_interval_s=0, push_on_start=False)
    app = create_simulator_app(config, clock=clock, push_transport=httpx.MockTransport(inbox.handle))
    async with AsyncTestClient(app, base_url="http://api.weixin.test") as client:
        yield Sim(client, inbox, clock)

"""``create_simulator_app``: the simulated WeChat as a Litestar app, with its lifespan and error mapping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import httpx
from litestar import Litestar, Request, Response
from litestar.di import Provide
from litestar.exceptions import MethodNotAllowedException, NotFoundException

from gateway.simulator.config import SimulatorConfig
from gateway.simulator.control_routes import SimController
from gateway.simulator.errors import ControlError, WeChatError
from gateway.simulator.login_page import login_page_handlers
from gateway.simulator.pushes import Pusher
from gateway.simulator.state import World
from gateway.simulator.wechat_routes import route_handlers, wechat_json

__all__ = ["create_simulator_app"]

_CONTROL_PREFIX = "/sim/"


def create_simulator_app(
    config: SimulatorConfig,
    *,
    clock: Callable[[], float] = time.time,
    push_transport: httpx.AsyncBaseTransport | None = None,
) -> Litestar:
    """Build the simulator: WeChat's routes at the root, the control API under /sim.

    The lifespan opens the one httpx client that carries pushes (through ``push_transport`` when given)
    and runs the ticket pusher; ``clock`` is the world's time source before any /sim/clock advance.
    """
    world = World(config, clock)
    pusher = Pusher(world, push_transport)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        async with pusher.open():
            ticker = asyncio.create_task(pusher.run_schedule(config.ticket_interval_s, config.push_on_start))
            try:
                yield
            finally:
                ticker.cancel()
                with suppress(asyncio.CancelledError):
                    await ticker

    return Litestar(
        route_handlers=[*route_handlers(), SimController, *login_page_handlers()],
        dependencies={
            "world": Provide(lambda: world, sync_to_thread=False),
            "pusher": Provide(lambda: pusher, sync_to_thread=False),
        },
        exception_handlers={
            ControlError: _control_error,
            NotFoundException: _not_found,
            MethodNotAllowedException: _wrong_method,
        },
        lifespan=[lifespan],
        openapi_config=None,
        logging_config=None,  # the host process (gateway demo, tests) owns logging
    )


def _control_error(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    assert isinstance(exc, ControlError)
    return Response({"status_code": exc.status, "detail": exc.detail}, status_code=exc.status)


def _not_found(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if request.url.path.startswith(_CONTROL_PREFIX):
        return Response(
            {"status_code": 404, "detail": str(exc.args[0] if exc.args else "Not Found")}, status_code=404
        )
    return wechat_json(WeChatError(40066).body(), status=404)


def _wrong_method(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if request.url.path.startswith(_CONTROL_PREFIX):
        return Response({"status_code": 405, "detail": "Method Not Allowed"}, status_code=405)
    # WeChat answers a wrong method with 200 and an errcode naming the method it wanted
    return wechat_json(WeChatError(43002 if request.method == "GET" else 43001).body())

"""``create_app``: the gateway's wiring. Nothing is built at import time."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from gateway import __version__
from gateway.http.errors import exception_handlers
from gateway.http.health import HealthController
from gateway.http.wechat import WeChatEventsController
from gateway.intake import EventIntake
from gateway.registry import Registry
from gateway.settings import Settings
from gateway.store import Store, create_engine, upgrade

__all__ = ["create_app"]


def _constant(value: object) -> Provide:
    def provide() -> object:
        return value

    return Provide(provide, sync_to_thread=False, use_cache=True)


def create_app(
    settings: Settings,
    registry: Registry,
    *,
    clock: Callable[[], float] = time.time,
    migrate: bool = True,
) -> Litestar:
    """Build the gateway for one registry. Its lifespan migrates the database (unless ``migrate`` is
    False) and disposes of the engine on shutdown."""
    engine = create_engine(settings.database_url)
    store = Store(engine, settings.secret_box, clock=clock)
    intake = EventIntake(registry, store)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        if migrate:
            await upgrade(engine)
        try:
            yield
        finally:
            await engine.dispose()

    return Litestar(
        route_handlers=[HealthController, WeChatEventsController],
        dependencies={
            "settings": _constant(settings),
            "registry": _constant(registry),
            "store": _constant(store),
            "intake": _constant(intake),
            "clock": _constant(clock),
        },
        exception_handlers=exception_handlers,  # type: ignore[arg-type]
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(title="Group Gateway", version=__version__, path="/schema"),
        logging_config=None,  # the process (CLI, tests) owns logging
    )

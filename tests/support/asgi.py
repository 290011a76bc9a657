"""Running Litestar apps in-process: their lifespan in the test's own loop, reached over ASGI."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from litestar import Litestar

__all__ = ["LateASGITransport", "running"]


class LateASGITransport(httpx.AsyncBaseTransport):
    """An ASGI transport whose app is set after construction: the gateway and the simulator call each
    other, so one of them must be built before the other exists."""

    def __init__(self, app: Litestar | None = None) -> None:
        self.app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.app is None:
            raise RuntimeError("LateASGITransport used before its app was set")
        return await httpx.ASGITransport(app=self.app).handle_async_request(request)


@asynccontextmanager
async def running(app: Litestar, base_url: str = "http://app.test") -> AsyncIterator[httpx.AsyncClient]:
    """Start ``app``'s lifespan in a task of the current loop (entered and exited by that one task, as
    anyio requires) and yield a client that reaches the app in-process."""
    started, stop = asyncio.Event(), asyncio.Event()

    async def run() -> None:
        async with app.lifespan():
            started.set()
            await stop.wait()

    task = asyncio.create_task(run())
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        await task  # raises what broke the start-up
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url) as client:
            yield client
    finally:
        stop.set()
        await task

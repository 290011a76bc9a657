"""Running ASGI apps under uvicorn, one or several in one event loop, stopped together by a signal.

The event loop and HTTP parser were chosen by measurement (docs/benchmarks.md, "The ASGI server"):
uvloop and httptools, where installed. ``GATEWAY_EVENT_LOOP=asyncio`` and ``GATEWAY_HTTP_PARSER=h11``
(`gateway.settings`) select the standard library's loop and the pure-Python parser instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import signal
from collections.abc import Callable, Coroutine, Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import uvicorn
from litestar import Litestar

from gateway.settings import EventLoop, HttpParser

__all__ = ["DRAIN_S", "Listener", "run_event_loop", "serve"]

T = TypeVar("T")

# On SIGTERM, requests in flight get this long to finish (a proxied call's upstream timeouts fit in it);
# then the lifespan stops the background work, which releases its leases.
DRAIN_S = 30


@dataclass(frozen=True)
class Listener:
    """One app on one address."""

    app: Litestar
    host: str
    port: int


class _Server(uvicorn.Server):
    # Signals are handled once for all servers by `serve`, not by each server for itself.
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve(
    listeners: Sequence[Listener],
    *,
    on_started: Callable[[], object] | None = None,
    http: HttpParser = "auto",
) -> None:
    """Serve every listener until SIGINT or SIGTERM (a second SIGINT forces the exit); connections stop
    being accepted at once and requests in flight get ``DRAIN_S`` to finish.

    Once every listener accepts connections, what start-up made is frozen out of the garbage collector
    (`_freeze_startup_objects`); then ``on_started`` runs (and is awaited if it returns an awaitable);
    if it fails, everything stops. ``http``: uvicorn's HTTP/1.1 parser (`_http_parser`).
    """
    servers = [
        _Server(
            uvicorn.Config(
                x.app,
                host=x.host,
                port=x.port,
                log_level="warning",
                log_config=None,  # uvicorn's lines go through the process's handler (JSON), not its own
                lifespan="on",
                http=_http_parser(http),
                timeout_graceful_shutdown=DRAIN_S,
            )
        )
        for x in listeners
    ]

    def stop(sig: signal.Signals) -> None:
        for server in servers:
            if server.should_exit and sig == signal.SIGINT:
                server.force_exit = True
            server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig)
    try:
        tasks = [asyncio.create_task(server.serve()) for server in servers]
        while not all(s.started for s in servers):
            if any(t.done() for t in tasks):
                break
            await asyncio.sleep(0.05)
        else:
            _freeze_startup_objects()
            if on_started is not None:
                try:
                    result = on_started()
                    if asyncio.iscoroutine(result):
                        await result
                except BaseException:
                    stop(signal.SIGTERM)
                    await asyncio.gather(*tasks, return_exceptions=True)
                    raise
        await asyncio.gather(*tasks)
        if any(not s.started for s in servers):
            raise OSError("a server could not start (is its port already in use?)")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _freeze_startup_objects() -> None:
    """Move everything alive after start-up (modules, the apps, their routes and services) out of the
    garbage collector's sight. It lives as long as the process, yet each full collection walked all of
    it: under load that was a 60-100 ms pause every few seconds, the token route's p99
    (docs/benchmarks.md, "Answering from memory")."""
    gc.collect()
    gc.freeze()


def run_event_loop(main: Coroutine[Any, Any, T], choice: EventLoop = "auto") -> T:
    """Run ``main`` (serving, say) to its end on the chosen event loop: uvloop when it is installed,
    unless ``choice`` is ``asyncio``."""
    if choice == "asyncio" or (choice == "auto" and importlib.util.find_spec("uvloop") is None):
        return asyncio.run(main)
    import uvloop  # optional: only where it is installed (not on Windows)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _http_parser(choice: HttpParser) -> str:
    """uvicorn's ``http``: httptools when installed, unless ``choice`` is ``h11``."""
    if choice == "auto":
        return "httptools" if importlib.util.find_spec("httptools") is not None else "h11"
    return choice

"""Serve an ASGI app on a real loopback socket, for clients that need a URL: in a background thread, or
in the test's own event loop (so the test can reach the app's objects, and real timeouts apply)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Generator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import uvicorn

__all__ = ["free_port", "serve_in_loop", "serve_in_thread"]


def free_port() -> int:
    """A loopback port free at the moment of asking (for a process that binds it itself)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve_in_thread(
    app: Any, *, host: str = "127.0.0.1", http: str = "auto", startup_timeout_s: float = 10.0
) -> Iterator[str]:
    """Run ``app`` under uvicorn (lifespan on) on a free port of ``host``; yields its base URL.

    ``http`` picks uvicorn's parser: "h11" keeps a forward proxy's absolute request-target whole in
    ``raw_path``, where httptools (uvicorn's choice when installed) keeps only its path. The socket is
    bound before the server starts, so no other process can take the port in between.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning", http=http))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {host}:{port} did not start")
            time.sleep(0.01)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=startup_timeout_s)
        sock.close()


class _QuietServer(uvicorn.Server):
    # The test process keeps its own signal handlers.
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@asynccontextmanager
async def serve_in_loop(
    app: Any, *, host: str = "127.0.0.1", startup_timeout_s: float = 10.0
) -> AsyncIterator[str]:
    """Run ``app`` under uvicorn (lifespan on) in the running event loop on a free port of ``host``;
    yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = _QuietServer(uvicorn.Config(app, lifespan="on", log_level="warning", log_config=None))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not server.started:
            if task.done() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {host}:{port} did not start")
            await asyncio.sleep(0.01)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()

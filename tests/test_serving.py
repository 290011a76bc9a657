"""The event loop and HTTP parser `gateway serve` runs on: uvloop and httptools unless told otherwise."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest
import uvloop

from gateway.errors import ConfigError
from gateway.http.serving import _http_parser, run_event_loop
from gateway.settings import Settings


async def loop_type() -> type:
    return type(asyncio.get_running_loop())


@pytest.mark.parametrize(("choice", "expected"), [("", uvloop.Loop), ("uvloop", uvloop.Loop)])
def test_uvloop_by_default(choice: str, expected: type) -> None:
    settings = Settings.from_environ({"GATEWAY_EVENT_LOOP": choice})
    assert run_event_loop(loop_type(), settings.event_loop) is expected


def test_the_standard_loop_on_request() -> None:
    settings = Settings.from_environ({"GATEWAY_EVENT_LOOP": "asyncio"})
    assert not issubclass(run_event_loop(loop_type(), settings.event_loop), uvloop.Loop)


@pytest.mark.parametrize(
    ("choice", "expected"), [("", "httptools"), ("httptools", "httptools"), ("h11", "h11")]
)
def test_http_parser(choice: str, expected: str) -> None:
    assert _http_parser(Settings.from_environ({"GATEWAY_HTTP_PARSER": choice}).http_parser) == expected


@pytest.mark.parametrize("name", ["GATEWAY_EVENT_LOOP", "GATEWAY_HTTP_PARSER"])
def test_an_unknown_choice_names_the_setting(name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_environ({name: "trio"})


def test_what_start_up_made_is_frozen_out_of_the_garbage_collector() -> None:
    # In a process of its own: serve() takes the signals, and freezing is for the whole process.
    script = textwrap.dedent(
        """
        import gc, os, signal
        from litestar import Litestar, get
        from gateway.http.serving import Listener, run_event_loop, serve

        @get("/")
        async def index() -> str:
            return "ok"

        def started() -> None:
            print(gc.get_freeze_count(), flush=True)
            os.kill(os.getpid(), signal.SIGTERM)

        before = gc.get_freeze_count()
        run_event_loop(serve([Listener(Litestar([index]), "127.0.0.1", 0)], on_started=started))
        print(before)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    frozen, before = map(int, done.stdout.split())
    assert before == 0
    assert frozen > 1000  # the modules, the app and its routes

"""The event loop and HTTP parser `gateway serve` runs on: uvloop and httptools unless told otherwise."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from gateway.errors import ConfigError
from gateway.serving import _http_parser, run_event_loop


async def loop_type() -> type:
    return type(asyncio.get_running_loop())


@pytest.mark.parametrize(("choice", "expected"), [("", uvloop.Loop), ("uvloop", uvloop.Loop)])
def test_uvloop_by_default(monkeypatch: pytest.MonkeyPatch, choice: str, expected: type) -> None:
    monkeypatch.setenv("GATEWAY_EVENT_LOOP", choice)
    assert run_event_loop(loop_type()) is expected


def test_the_standard_loop_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_EVENT_LOOP", "asyncio")
    assert not issubclass(run_event_loop(loop_type()), uvloop.Loop)


@pytest.mark.parametrize(
    ("choice", "expected"), [("", "httptools"), ("httptools", "httptools"), ("h11", "h11")]
)
def test_http_parser(monkeypatch: pytest.MonkeyPatch, choice: str, expected: str) -> None:
    monkeypatch.setenv("GATEWAY_HTTP_PARSER", choice)
    assert _http_parser() == expected


def test_an_unknown_loop_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_EVENT_LOOP", "trio")
    coroutine = loop_type()
    with pytest.raises(ConfigError, match="GATEWAY_EVENT_LOOP"):
        run_event_loop(coroutine)
    coroutine.close()


def test_an_unknown_parser_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_HTTP_PARSER", "trio")
    with pytest.raises(ConfigError, match="GATEWAY_HTTP_PARSER"):
        _http_parser()

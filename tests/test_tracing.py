"""OpenTelemetry (the ``otel`` extra, in dev): with ``GATEWAY_OTEL`` every request is a server span named by
method and route template, continuing the caller's ``traceparent``, carrying status and request id and no
key, token or raw path; without it, no span."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import httpx
import msgspec
import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway.crypto import SecretBox
from gateway.errors import ConfigError
from gateway.http.app import create_app
from gateway.registry.model import Registry
from tests.conftest import CLIENT_KEYS, make_settings
from tests.support.flows import push_ticket
from tests.support.world import OA, RETAIL, open_world
from tests.test_e2e import EXAMPLE, Process, environment, free_port, processes, wait_for

__all__ = ["environment", "processes"]  # the fixtures, shared with test_e2e

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exported = InMemorySpanExporter()
    yield exported
    exported.clear()


def tracer_of(exporter: InMemorySpanExporter) -> object:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test")


async def test_every_request_is_a_span_without_secrets(
    registry: Registry, sqlite_url: str, secret_box: SecretBox, exporter: InMemorySpanExporter
) -> None:
    settings = msgspec.structs.replace(make_settings(sqlite_url, secret_box), otel=True)
    key = CLIENT_KEYS["crm"]
    async with open_world(
        registry, sqlite_url, secret_box, settings=settings, tracer=tracer_of(exporter)
    ) as world:
        assert (await push_ticket(world.sim, RETAIL["appid"]))["body"] == "success"
        await world.authorize("retail", OA, [1, 2, 24])
        exporter.clear()
        issued = await world.gateway.get(
            f"/v1/authorizers/{OA}/access-token",
            headers={"Authorization": f"Bearer {key}", "traceparent": PARENT},
        )
        assert issued.status_code == 200
        wx = await world.gateway.get(
            "/wx/cgi-bin/token", params={"grant_type": "client_credential", "appid": OA, "secret": key}
        )
        assert wx.status_code == 200
        refused = await world.gateway.get(f"/v1/authorizers/{OA}/access-token")
        assert refused.status_code == 401

    spans = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    token, wx_span, refusal = spans
    assert token.name == refusal.name == "GET /v1/authorizers/{appid}/access-token"
    assert format(token.context.trace_id, "032x") == TRACE_ID  # the caller's trace, continued
    assert token.parent is not None and format(token.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert token.attributes is not None
    assert token.attributes["http.route"] == "/v1/authorizers/{appid}/access-token"
    assert token.attributes["gateway.request_id"] == issued.headers["x-request-id"]
    assert wx_span.name == "GET /wx/cgi-bin/token"
    assert refusal.parent is None  # no traceparent: a trace of its own
    statuses = sorted(s.attributes["http.response.status_code"] for s in spans if s.attributes)
    assert statuses == [200, 200, 401]
    assert all(s.status.status_code != StatusCode.ERROR for s in spans)
    every = json.dumps([{"name": s.name, **dict(s.attributes or {})} for s in spans])
    for secret in (key, wx.json()["access_token"], OA):
        assert secret not in every


async def test_no_span_unless_asked(
    registry: Registry, sqlite_url: str, secret_box: SecretBox, exporter: InMemorySpanExporter
) -> None:
    settings = make_settings(sqlite_url, secret_box)
    async with open_world(
        registry, sqlite_url, secret_box, settings=settings, tracer=tracer_of(exporter)
    ) as world:
        assert (await world.gateway.get("/healthz")).status_code == 200
    assert exporter.get_finished_spans() == ()


def test_asking_without_the_extra_is_refused(
    registry: Registry, sqlite_url: str, secret_box: SecretBox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.http.app.tracing_installed", lambda: False)  # as if not installed
    settings = msgspec.structs.replace(make_settings(sqlite_url, secret_box), otel=True)
    with pytest.raises(ConfigError, match=r"GATEWAY_OTEL .* pip install"):
        create_app(settings, registry)


class Collector(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver: keeps the bodies posted to /v1/traces."""

    received: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/traces":
            self.received.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


def test_serve_exports_spans_over_otlp(
    tmp_path: Path, environment: dict[str, str], processes: list[Process]
) -> None:
    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    try:
        port = free_port()
        registry = tmp_path / "registry.yaml"
        registry.write_text(EXAMPLE.read_text())
        environment |= {
            "GATEWAY_OTEL": "1",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.server_port}",
            "OTEL_SERVICE_NAME": "gateway-under-test",
        }
        gateway = Process(
            ["serve", "--config", str(registry), "--port", str(port)], environment, tmp_path / "log"
        )
        processes.append(gateway)
        wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200, what="up"
        )
        assert gateway.stop() == 0, gateway.output()  # the provider's shutdown sends what is batched
        exported = b"".join(Collector.received)
        assert b"GET /healthz" in exported
        assert b"gateway-under-test" in exported
    finally:
        collector.shutdown()
        collector.server_close()

"""Observability: ``/metrics`` after driving the in-process world, request ids, JSON log lines."""

from __future__ import annotations

import io
import json
import logging
import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.errors import ConfigError
from gateway.observability.logs import REQUEST_ID, configure_logging
from tests.support.world import OA, RETAIL, World

TOKEN_ROUTE = "/v1/authorizers/{appid}/access-token"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(world: World) -> Samples:
    response = await world.gateway.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def test_requests_upstream_calls_renewals_and_state_are_measured(ready: World) -> None:
    await ready.expire_everything()
    before = await scrape(ready)
    assert (await ready.token(OA)).status_code == 200
    assert (await ready.token(OA)).status_code == 200  # from the cache: no renewal, no upstream call
    assert (await ready.gateway.get(f"/nowhere/{OA}")).status_code == 404
    after = await scrape(ready)

    http = "gateway_http_requests_total"
    assert grew(before, after, http, route=TOKEN_ROUTE, method="GET", status="200") == 2
    assert grew(before, after, http, route="unmatched", method="GET", status="404") == 1
    assert grew(before, after, "gateway_http_request_seconds_count", route=TOKEN_ROUTE) == 2
    wechat = "gateway_wechat_calls_total"
    assert grew(before, after, wechat, api="api_component_token", errcode="0") == 1
    assert grew(before, after, wechat, api="api_authorizer_token", errcode="0") == 1
    assert grew(before, after, "gateway_wechat_call_seconds_count", api="api_authorizer_token") == 1
    renewals = "gateway_renewals_total"
    assert grew(before, after, renewals, kind="component", platform="retail", outcome="ok") == 1
    assert grew(before, after, renewals, kind="authorizer", platform="retail", outcome="ok") == 1

    assert value(after, "gateway_database_up") == 1
    for platform in ("retail", "finance"):
        assert 0 <= value(after, "gateway_ticket_age_seconds", platform=platform) < 60
        for kind in ("component", "authorizer", "jsapi"):
            assert (
                ("gateway_quota_held_credentials", frozenset({("kind", kind), ("platform", platform)}))
            ) in after
    assert ("gateway_deliveries", frozenset({("status", "pending")})) in after
    # Labels carry templates and registry ids, never an appid or a secret.
    labels = {v for _, pairs in after for _, v in pairs}
    assert not {v for v in labels if OA in v or RETAIL["appid"] in v or RETAIL["secret"] in v}


async def test_45009_counts_a_quota_error_and_shows_the_open_breaker(ready: World) -> None:
    await ready.expire_everything()
    await ready.fault(endpoint="api_authorizer_token", errcode=45009)
    before = await scrape(ready)
    for _ in range(3):
        assert (await ready.token(OA)).json()["error"]["code"] == "wechat_quota_exhausted"
    after = await scrape(ready)

    assert grew(before, after, "gateway_wechat_calls_total", api="api_authorizer_token", errcode="45009") == 1
    assert (
        grew(before, after, "gateway_quota_errors_total", platform="retail", api="api_authorizer_token") == 1
    )
    outcome = {"kind": "authorizer", "platform": "retail", "outcome": "wechat_quota_exhausted"}
    assert grew(before, after, "gateway_renewals_total", **outcome) == 1  # the breaker holds the others
    assert value(after, "gateway_quota_held_credentials", kind="authorizer", platform="retail") == 1
    assert value(after, "gateway_quota_held_credentials", kind="component", platform="retail") == 0
    refused = {"route": TOKEN_ROUTE, "method": "GET", "status": "503"}
    assert grew(before, after, "gateway_http_requests_total", **refused) == 3


async def test_61023_shows_as_a_renewal_needing_reauthorization(ready: World) -> None:
    await ready.expire_everything()
    await ready.fault(endpoint="api_authorizer_token", errcode=61023, times=1)
    before = await scrape(ready)
    assert (await ready.token(OA)).status_code == 409
    after = await scrape(ready)
    assert grew(before, after, "gateway_wechat_calls_total", api="api_authorizer_token", errcode="61023") == 1
    outcome = {"kind": "authorizer", "platform": "retail", "outcome": "reauthorization_required"}
    assert grew(before, after, "gateway_renewals_total", **outcome) == 1


async def test_unreachable_wechat_is_counted_per_attempt(ready: World) -> None:
    await ready.expire_everything()
    await ready.fault(endpoint="api_component_token", http_status=503)
    before = await scrape(ready)
    assert (await ready.token(OA)).status_code == 503
    after = await scrape(ready)
    failed = {"api": "api_component_token", "errcode": "http_5xx"}
    assert grew(before, after, "gateway_wechat_calls_total", **failed) == 3  # every attempt
    outcome = {"kind": "component", "platform": "retail", "outcome": "wechat_unavailable"}
    assert grew(before, after, "gateway_renewals_total", **outcome) == 1


async def test_a_platform_without_a_ticket_has_an_infinite_ticket_age(world: World) -> None:
    samples = await scrape(world)
    assert value(samples, "gateway_ticket_age_seconds", platform="retail") == math.inf


async def test_metrics_answer_with_the_database_down(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    assert value(await scrape(world), "gateway_database_up") == 1

    async def down() -> dict[str, float]:
        raise ConnectionRefusedError

    monkeypatch.setattr(world.services.store, "ticket_receipts", down)
    samples = await scrape(world)
    assert value(samples, "gateway_database_up") == 0
    assert not [name for name, _ in samples if name == "gateway_ticket_age_seconds"]
    assert value(samples, "gateway_http_requests_total", route="/metrics", method="GET", status="200") >= 1


async def test_request_ids_are_echoed_kept_when_sane_and_made_otherwise(world: World) -> None:
    made = (await world.gateway.get("/healthz")).headers["x-request-id"]
    assert len(made) == 16
    assert made != (await world.gateway.get("/healthz")).headers["x-request-id"]
    kept = await world.gateway.get("/healthz", headers={"X-Request-Id": "lb-7f3a.2:9"})
    assert kept.headers["x-request-id"] == "lb-7f3a.2:9"
    for insane in ("x" * 200, "-leading-dash", "a b", '{"json": 1}'):
        replaced = await world.gateway.get("/healthz", headers={"X-Request-Id": insane})
        assert replaced.headers["x-request-id"] not in (insane, made)
    assert (await world.gateway.get("/nowhere")).headers["x-request-id"]  # unmatched routes too


@pytest.fixture
def log_lines() -> io.StringIO:
    """The process's logging as ``gateway serve`` sets it up, into a buffer; put back afterwards."""
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    return stream


async def test_log_lines_are_json_with_the_request_id_of_their_request(
    ready: World, log_lines: io.StringIO
) -> None:
    await ready.expire_everything()
    logging.getLogger("gateway.test").warning("outside any request, with %s", "arguments")
    response = await ready.token(OA)  # renews two tokens: several lines, all in this request
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]

    outside = next(line for line in lines if line["logger"] == "gateway.test")
    assert outside["event"] == "outside any request, with arguments"
    assert outside["level"] == "warning"
    assert outside["timestamp"].endswith("Z")
    assert "request_id" not in outside
    during = [line for line in lines if line.get("request_id") == request_id]
    events = " | ".join(line["event"] for line in during)
    assert "wechat api_authorizer_token errcode=0" in events
    assert "renewed authorizer:retail:" in events
    assert {line["logger"] for line in during} >= {"gateway.wechat.client", "gateway.credentials.tokens"}
    assert {line.get("request_id") for line in lines} <= {None, request_id}


def test_log_lines_carry_exceptions_and_text_is_readable() -> None:
    stream = io.StringIO()
    configure_logging("warning", "json", stream)
    configure_logging("warning", "json", stream)  # configuring again replaces, never doubles
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("gateway.test").exception("failed")
    logging.getLogger("gateway.test").info("below the level")
    (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert (line["event"], line["level"]) == ("failed", "error")
    assert line["exception"][0]["exc_type"] == "ValueError"

    text = io.StringIO()
    configure_logging("INFO", "text", text)
    logging.getLogger("gateway.test").info("plain %s", "words")
    assert "plain words" in text.getvalue()
    assert not text.getvalue().startswith("{")


class _Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


def test_a_json_line_carries_extras_the_request_id_and_the_time_of_the_call(log_lines: io.StringIO) -> None:
    logger = logging.getLogger("gateway.test")
    record = logger.makeRecord(
        "gateway.test", logging.WARNING, __file__, 1, "sent %d", (3,), None,
        extra={"platform": "retail", "tries": [1, 2], "thing": _Opaque()},
    )  # fmt: skip
    record.created = 1_764_000_000.25  # logged long before it is written: the line keeps the call's time
    token = REQUEST_ID.set("req-7")
    try:
        logger.handle(record)
    finally:
        REQUEST_ID.reset(token)
    logger.handle(logger.makeRecord("gateway.test", logging.INFO, __file__, 2, "after", (), None))
    inside, after = [json.loads(text) for text in log_lines.getvalue().splitlines()]
    assert inside == {
        "event": "sent 3",
        "request_id": "req-7",
        "level": "warning",
        "logger": "gateway.test",
        "platform": "retail",
        "tries": [1, 2],
        "thing": "<opaque>",
        "timestamp": "2025-11-24T16:00:00.250000Z",
    }
    assert list(inside)[:4] == ["event", "request_id", "level", "logger"]
    assert "request_id" not in after and after["event"] == "after"


def test_a_text_line_carries_the_request_id_and_extras() -> None:
    text = io.StringIO()
    configure_logging("INFO", "text", text)
    token = REQUEST_ID.set("req-8")
    try:
        logging.getLogger("gateway.test").info("renewed %s", "retail", extra={"tries": 2})
    finally:
        REQUEST_ID.reset(token)
    (line,) = text.getvalue().splitlines()
    assert "renewed retail" in line and "request_id=req-8" in line and "tries=2" in line
    assert "gateway.test" in line and "info" in line


def _fetch_with(appsecret: str) -> None:
    ticket = "ticket@" + appsecret[::-1]  # noqa: F841 - a local a traceback could show
    raise RuntimeError("WeChat did not answer")


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_tracebacks_in_log_lines_show_no_local_values(fmt: str) -> None:
    # structlog's dict tracebacks and Rich's text ones both write every frame's locals by default.
    secret = "appsecret-3f9a2c7d1e"
    stream = io.StringIO()
    configure_logging("INFO", fmt, stream)
    try:
        _fetch_with(secret)
    except RuntimeError:
        logging.getLogger("gateway.test").exception("token fetch failed")
    written = stream.getvalue()
    assert "WeChat did not answer" in written and "_fetch_with" in written  # the traceback is there
    assert secret not in written and secret[::-1] not in written


@pytest.mark.parametrize(("level", "fmt"), [("LOUD", "json"), ("INFO", "xml")])
def test_unknown_log_levels_and_formats_are_refused(level: str, fmt: str) -> None:
    with pytest.raises(ConfigError, match="GATEWAY_LOG_"):
        configure_logging(level, fmt, io.StringIO())

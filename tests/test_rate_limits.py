"""Per-client rate limits (token buckets, per process or shared through Redis) and request body caps.

Redis is the server on this machine (``GATEWAY_TEST_REDIS``, default ``redis://127.0.0.1:6379``); each
test keeps its keys under a prefix of its own and deletes them afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import msgspec
import pytest
import redis.asyncio as redis

from gateway.access.ratelimit import LocalRateLimiter, RedisRateLimiter
from gateway.crypto import SecretBox
from gateway.errors import ConfigError, RateLimited
from gateway.http.app import create_app
from gateway.http.limits import MAX_BODY_BYTES
from gateway.http.wx import MAX_UPLOAD_BYTES
from gateway.observability.metrics import Metrics
from gateway.registry.model import Client, RateLimit, Registry, parse_registry
from gateway.settings import Settings
from tests.conftest import CLIENT_KEYS, REGISTRY_YAML, registry_environ
from tests.support.asgi import running
from tests.support.flows import push_ticket
from tests.support.world import FINANCE, OA, RETAIL, World, open_world

REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS", "redis://127.0.0.1:6379")
SLOW = RateLimit(per_second=0.01, burst=3)  # three at once, then one per 100 s: no refill during a test


def limited(**limits: RateLimit) -> Registry:
    """The test registry with these clients' rate limits."""
    registry = parse_registry(REGISTRY_YAML, source="test-registry.yaml", environ=registry_environ())
    clients = tuple(
        msgspec.structs.replace(c, rate_limit=limits[c.id]) if c.id in limits else c for c in registry.clients
    )
    return msgspec.structs.replace(registry, clients=clients)


def bearer(client: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {CLIENT_KEYS[client]}"}


def client(id: str, limit: RateLimit | None) -> Client:
    return Client(id=id, key_sha256="0" * 64, scopes=("token",), rate_limit=limit)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix of this test's own on the local Redis; its keys are deleted afterwards."""
    prefix = f"gateway-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    connection = redis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in connection.scan_iter(match=f"{prefix}*")]
        if keys:
            await connection.delete(*keys)
    finally:
        await connection.aclose()


def settings_for(sqlite_url: str, **environ: str) -> Settings:
    key = base64.b64encode(os.urandom(32)).decode()
    return Settings.from_environ({"GATEWAY_SECRET_KEY": key, "GATEWAY_DATABASE_URL": sqlite_url} | environ)


@asynccontextmanager
async def world_with(registry: Registry, sqlite_url: str, secret_box: SecretBox) -> AsyncIterator[World]:
    """Tickets on both platforms and OA authorized on retail (1, 2, 24; finance: 11, 15), counters reset."""
    async with open_world(registry, sqlite_url, secret_box) as world:
        for values in (RETAIL, FINANCE):
            await push_ticket(world.sim, values["appid"])
        await world.authorize("retail", OA, [1, 2, 24])
        await world.authorize("finance", OA, [11, 15])
        await world.reset_counters()
        yield world


@pytest.fixture
async def slow_crm(sqlite_url: str, secret_box: SecretBox) -> AsyncIterator[World]:
    """crm limited to ``SLOW``; every other client unlimited."""
    async with world_with(limited(crm=SLOW), sqlite_url, secret_box) as world:
        yield world


@pytest.fixture
async def unlimited(sqlite_url: str, secret_box: SecretBox) -> AsyncIterator[World]:
    """No client limited."""
    async with world_with(limited(), sqlite_url, secret_box) as world:
        yield world


# -- the bucket ---------------------------------------------------------------------------------------


async def test_a_bucket_grants_its_burst_then_refills_at_its_rate() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(clock=clock)
    limit = RateLimit(per_second=2, burst=3)

    assert [await limiter.take("crm", limit) for _ in range(3)] == [(True, 0.0)] * 3
    assert await limiter.take("crm", limit) == (False, 0.5)
    clock.now += 0.25
    assert await limiter.take("crm", limit) == (False, 0.25)
    clock.now += 0.25
    assert await limiter.take("crm", limit) == (True, 0.0)
    # An idle hour refills to the burst, no further.
    clock.now += 3600
    assert [(await limiter.take("crm", limit))[0] for _ in range(4)] == [True, True, True, False]
    # One bucket per client.
    assert await limiter.take("erp", limit) == (True, 0.0)


async def test_a_changed_limit_applies_to_the_next_request() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(clock=clock)
    await limiter.take("crm", RateLimit(per_second=1, burst=10))

    assert (await limiter.take("crm", RateLimit(per_second=1, burst=1)))[0] is True
    assert (await limiter.take("crm", RateLimit(per_second=1, burst=1)))[0] is False


async def test_admit_refuses_with_the_wait_and_counts_the_refusal() -> None:
    metrics = Metrics()
    limiter = LocalRateLimiter(metrics, clock=FakeClock())
    crm = client("crm", RateLimit(per_second=0.4, burst=1))
    await limiter.admit(crm)

    with pytest.raises(RateLimited) as refused:
        await limiter.admit(crm)

    assert refused.value.client_id == "crm"
    assert refused.value.retry_after_s == pytest.approx(2.5)
    assert refused.value.retry_after == 3
    assert metrics.registry.get_sample_value("gateway_rate_limited_total", {"client": "crm"}) == 1


async def test_a_client_without_a_limit_is_never_refused_nor_tracked() -> None:
    limiter = LocalRateLimiter(clock=FakeClock())
    for _ in range(10_000):
        await limiter.admit(client("crm", None))
    assert limiter._buckets == {}


@pytest.mark.parametrize(("seconds", "header"), [(0.0, 1), (0.001, 1), (1.0, 1), (1.2, 2), (99.99, 100)])
def test_retry_after_is_whole_seconds_rounded_up(seconds: float, header: int) -> None:
    assert RateLimited("crm", seconds).retry_after == header


def test_redis_url_setting() -> None:
    base = {"GATEWAY_SECRET_KEY": base64.b64encode(os.urandom(32)).decode()}
    assert Settings.from_environ(base).redis_url is None
    assert Settings.from_environ(base | {"GATEWAY_REDIS_URL": ""}).redis_url is None
    assert Settings.from_environ(base | {"GATEWAY_REDIS_URL": REDIS_URL}).redis_url == REDIS_URL
    for bad in ("http://127.0.0.1:6379", "redis://:secret@127.0.0.1:port", "redis://"):
        with pytest.raises(ConfigError) as refused:
            Settings.from_environ(base | {"GATEWAY_REDIS_URL": bad})
        assert "secret" not in str(refused.value)


# -- Redis --------------------------------------------------------------------------------------------


async def test_redis_buckets_are_atomic_shared_and_expire(redis_prefix: str) -> None:
    first = RedisRateLimiter(REDIS_URL, key_prefix=redis_prefix)
    second = RedisRateLimiter(REDIS_URL, key_prefix=redis_prefix)
    connection = redis.Redis.from_url(REDIS_URL)
    try:
        limit = RateLimit(per_second=0.01, burst=3)
        taken = [
            await first.take("crm", limit),
            await second.take("crm", limit),
            await first.take("crm", limit),
        ]
        assert taken == [(True, 0.0)] * 3
        allowed, retry_after = await second.take("crm", limit)
        assert not allowed
        assert 99 < retry_after <= 100
        # The key expires once the idle bucket would be full again (300 s) plus a second.
        assert 0 < await connection.pttl(f"{redis_prefix}ratelimit:crm") <= 301_000
        # Another client, another bucket; forty requests at once from two replicas get exactly its burst.
        together = await asyncio.gather(
            *(limiter.take("erp", RateLimit(per_second=0.01, burst=5)) for limiter in [first, second] * 20)
        )
        assert sum(allowed for allowed, _ in together) == 5
        # A Redis that lost its scripts (a restart) gets the script again.
        await connection.script_flush()
        assert await first.take("pos", limit) == (True, 0.0)
        assert await connection.exists(f"{redis_prefix}ratelimit:pos") == 1  # taken in Redis, not locally
    finally:
        await first.aclose()
        await second.aclose()
        await connection.aclose()


async def test_redis_buckets_refill_on_redis_time(redis_prefix: str) -> None:
    limiter = RedisRateLimiter(REDIS_URL, key_prefix=redis_prefix)
    try:
        limit = RateLimit(per_second=20, burst=1)
        assert (await limiter.take("crm", limit))[0] is True
        allowed, retry_after = await limiter.take("crm", limit)
        assert not allowed
        assert 0 < retry_after <= 0.05
        await asyncio.sleep(retry_after + 0.01)
        assert (await limiter.take("crm", limit))[0] is True
    finally:
        await limiter.aclose()


async def test_two_gateways_share_one_limit_through_redis(sqlite_url: str, redis_prefix: str) -> None:
    registry = limited(audit=SLOW)
    environ = {"GATEWAY_REDIS_URL": REDIS_URL, "GATEWAY_REDIS_KEY_PREFIX": redis_prefix}
    one = create_app(settings_for(sqlite_url, **environ), registry, background=False)
    two = create_app(settings_for(sqlite_url, **environ), registry, background=False)
    async with running(one) as first, running(two) as second:
        codes = [
            (await replica.get("/v1/catalog", headers=bearer("audit"))).status_code
            for replica in (first, second, first)
        ]
        assert codes == [200, 200, 200]
        for replica in (second, first):
            refused = await replica.get("/v1/catalog", headers=bearer("audit"))
            assert refused.status_code == 429
            assert refused.headers["retry-after"] == "100"
        assert (await second.get("/v1/catalog", headers=bearer("ops"))).status_code == 200


async def test_without_redis_each_process_has_its_own_buckets(sqlite_url: str) -> None:
    registry = limited(audit=SLOW)
    one = create_app(settings_for(sqlite_url), registry, background=False)
    two = create_app(settings_for(sqlite_url), registry, background=False)
    async with running(one) as first, running(two) as second:
        for replica in (first, second):
            codes = [
                (await replica.get("/v1/catalog", headers=bearer("audit"))).status_code for _ in range(4)
            ]
            assert codes == [200, 200, 200, 429]


async def test_redis_down_falls_back_to_per_process_limits(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    registry = limited(audit=SLOW)
    down = f"redis://:hunter2@127.0.0.1:{closed_port()}"
    app = create_app(settings_for(sqlite_url, GATEWAY_REDIS_URL=down), registry, background=False)
    with caplog.at_level(logging.WARNING, logger="gateway.access.ratelimit"):
        async with running(app) as gateway:
            codes = [
                (await gateway.get("/v1/catalog", headers=bearer("audit"))).status_code for _ in range(4)
            ]
            metrics = app.state.services.metrics
    # Nothing refused for Redis's sake; the client's own limit still holds in this process.
    assert codes == [200, 200, 200, 429]
    assert metrics.registry.get_sample_value("gateway_rate_limit_redis_errors_total") >= 1
    warnings = [r.getMessage() for r in caplog.records if r.name == "gateway.access.ratelimit"]
    assert len(warnings) == 1
    assert "limits are per process" in warnings[0]
    assert "hunter2" not in warnings[0]


async def test_a_failing_redis_is_retried_after_a_pause_and_warned_about_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    metrics = Metrics()
    limiter = RedisRateLimiter(f"redis://127.0.0.1:{closed_port()}", metrics, clock=clock)
    limit = RateLimit(per_second=0.01, burst=100)
    errors = "gateway_rate_limit_redis_errors_total"
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.access.ratelimit"):
            assert await limiter.take("crm", limit) == (True, 0.0)
            assert await limiter.take("crm", limit) == (True, 0.0)  # within the pause: Redis not tried
            assert metrics.registry.get_sample_value(errors) == 1
            clock.now += 1.5
            await limiter.take("crm", limit)
            assert metrics.registry.get_sample_value(errors) == 2
            clock.now += 60
            await limiter.take("crm", limit)
        assert metrics.registry.get_sample_value(errors) == 3
        assert len([r for r in caplog.records if r.name == "gateway.access.ratelimit"]) == 2
    finally:
        await limiter.aclose()


# -- /v1 and /wx --------------------------------------------------------------------------------------


async def test_v1_answers_429_with_retry_after_past_the_limit(slow_crm: World) -> None:
    for _ in range(3):
        assert (await slow_crm.token(OA)).status_code == 200

    refused = await slow_crm.token(OA)

    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "100"
    assert refused.json()["error"] == {
        "code": "rate_limited",
        "message": "client 'crm' is past its rate limit; retry after 100 s",
    }
    # One bucket for every route of the client, checked before scopes (crm lacks `bind`) and any work.
    assert (await slow_crm.token(OA, kind="jsapi-ticket")).status_code == 429
    binding = await slow_crm.gateway.post(f"/v1/authorizers/{OA}/open-binding", headers=bearer("crm"))
    assert binding.status_code == 429
    assert await slow_crm.calls("ticket/getticket") == 0
    rendered = slow_crm.services.metrics.render().decode()
    assert 'gateway_rate_limited_total{client="crm"} 3.0' in rendered


async def test_unlimited_clients_are_not_affected(slow_crm: World) -> None:
    for _ in range(4):
        await slow_crm.token(OA)
    assert (await slow_crm.token(OA)).status_code == 429

    codes = {(await slow_crm.token(OA, client="limited")).status_code for _ in range(50)}

    assert codes == {200}


async def test_an_unknown_key_is_401_not_429(slow_crm: World) -> None:
    for _ in range(4):
        await slow_crm.token(OA)
    response = await slow_crm.gateway.get(
        f"/v1/authorizers/{OA}/access-token", headers={"Authorization": "Bearer nope"}
    )
    assert response.status_code == 401


async def test_wx_answers_45009_with_retry_after_past_the_limit(slow_crm: World) -> None:
    token_response = await slow_crm.gateway.get(
        "/wx/cgi-bin/token",
        params={"grant_type": "client_credential", "appid": OA, "secret": CLIENT_KEYS["crm"]},
    )
    token = token_response.json()["access_token"]
    for _ in range(2):
        response = await slow_crm.gateway.get("/wx/cgi-bin/user/get", params={"access_token": token})
        assert "total" in response.json()

    refused = await slow_crm.gateway.get("/wx/cgi-bin/user/get", params={"access_token": token})

    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "100"
    body = refused.json()
    assert body["errcode"] == 45009
    assert body["errmsg"].startswith("reach max api rate limit: ")
    assert "per-client rate limit" in body["errmsg"]
    assert await slow_crm.calls("user/get") == 2  # the refused call never reached WeChat
    # The token endpoint and the bearer form count too.
    again = await slow_crm.gateway.get(
        "/wx/cgi-bin/token",
        params={"grant_type": "client_credential", "appid": OA, "secret": CLIENT_KEYS["crm"]},
    )
    assert (again.status_code, again.json()["errcode"]) == (429, 45009)
    headers = bearer("crm") | {"X-Authorizer-Appid": OA}
    bearer_call = await slow_crm.gateway.get("/wx/cgi-bin/user/get", headers=headers)
    assert (bearer_call.status_code, bearer_call.json()["errcode"]) == (429, 45009)


async def test_component_calls_are_limited(sqlite_url: str, secret_box: SecretBox) -> None:
    async with world_with(limited(ops=RateLimit(per_second=0.01, burst=1)), sqlite_url, secret_box) as world:
        path = "/wx/component/retail/cgi-bin/component/api_get_authorizer_list"
        payload = {"component_appid": RETAIL["appid"], "offset": 0, "count": 10}
        first = await world.gateway.post(path, headers=bearer("ops"), json=payload)
        assert first.status_code == 200
        refused = await world.gateway.post(path, headers=bearer("ops"), json=payload)
        assert (refused.status_code, refused.json()["errcode"]) == (429, 45009)
        assert refused.headers["retry-after"] == "100"


# -- body caps ----------------------------------------------------------------------------------------


def _chunks(size: int) -> Iterator[bytes]:
    for _ in range(size // 65536):
        yield b"x" * 65536


async def test_v1_bodies_past_the_app_cap_are_413_before_anything(unlimited: World) -> None:
    path = "/v1/platforms/retail/authorization-links"
    oversized = json.dumps({"auth_type": 3, "pad": "x" * MAX_BODY_BYTES}).encode()
    headers = bearer("onboarding") | {"Content-Type": "application/json"}

    announced = await unlimited.gateway.post(path, content=oversized, headers=headers)
    unauthenticated = await unlimited.gateway.post(path, content=oversized)
    streamed = await unlimited.gateway.post(
        path, content=_async(_chunks(2 * MAX_BODY_BYTES)), headers=headers
    )
    ignored_by_a_get = await unlimited.gateway.request(
        "GET", "/v1/catalog", content=b"x" * (MAX_BODY_BYTES + 1), headers=bearer("audit")
    )

    for response in (announced, unauthenticated, streamed, ignored_by_a_get):
        assert response.status_code == 413, response.text
        assert response.json()["error"] == {
            "code": "body_too_large",
            "message": f"the request body is larger than the {MAX_BODY_BYTES} bytes this route accepts",
        }
    assert await unlimited.calls("api_create_preauthcode") == 0
    fine = await unlimited.gateway.post(path, json={"auth_type": 3}, headers=bearer("onboarding"))
    assert fine.status_code == 200


async def test_wx_uploads_have_their_own_larger_cap(unlimited: World) -> None:
    token_response = await unlimited.gateway.get(
        "/wx/cgi-bin/token",
        params={"grant_type": "client_credential", "appid": OA, "secret": CLIENT_KEYS["crm"]},
    )
    token = token_response.json()["access_token"]
    path = "/wx/cgi-bin/media/upload"
    params = {"access_token": token, "type": "image"}

    past_the_app_cap = b"\xff" * (2 * MAX_BODY_BYTES)
    uploaded = await unlimited.gateway.post(
        path, params=params, files={"media": ("big.jpg", past_the_app_cap, "image/jpeg")}
    )
    assert uploaded.json().get("media_id"), uploaded.text

    too_big = b"\xff" * (MAX_UPLOAD_BYTES + 1)
    refused = await unlimited.gateway.post(
        path, params=params, files={"media": ("huge.jpg", too_big, "image/jpeg")}
    )
    assert refused.status_code == 413
    assert refused.json() == {
        "errcode": 40006,
        "errmsg": f"the request body is larger than the {MAX_UPLOAD_BYTES} bytes this route accepts",
    }
    assert await unlimited.calls("media/upload") == 1


async def _async(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk

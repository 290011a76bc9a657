"""Per-client rate limits: a token bucket per client, from the registry's ``rate_limit``.

A client with ``rate_limit: {per_second: R, burst: B}`` may send B requests at once, then R per second;
a client without one is never limited, nor slowed down (no bucket, no Redis round trip). The limit is
taken right after the client is known and before any other work, on every route a client key or
gateway token opens: ``/v1/*`` and ``/wx/*``.

Where the buckets live:

- ``GATEWAY_REDIS_URL`` unset: in this process (`LocalRateLimiter`). With several replicas each one
  grants the whole limit, so a client gets up to N times its rate.
- ``GATEWAY_REDIS_URL`` set: in Redis, shared by every replica (`RedisRateLimiter`). One Lua script
  reads, refills and takes from the bucket atomically, on Redis's clock (replicas' clocks may differ); the
  key ``<prefix>ratelimit:<client id>`` expires once an idle bucket would be full again.

When Redis fails (down, timed out, refusing), a request is never refused for that: the check falls back
to this process's buckets, so limits hold per replica, as without Redis, rather than vanishing (they guard
the group's WeChat quotas, which a runaway client could exhaust in minutes). Redis is tried again after
`REDIS_RETRY_S`; each fallback is counted in ``gateway_rate_limit_redis_errors_total`` and a warning is
logged at most once per `WARN_INTERVAL_S`.

The refusal (`RateLimited`) is HTTP 429 with ``Retry-After`` in whole seconds, rounded up, on both
surfaces: ``{"error": {"code": "rate_limited", …}}`` on ``/v1`` and ``{"errcode": 45009, "errmsg": …}`` on
``/wx``. WeChat itself answers its own 45009 (daily quota) with HTTP 200, and the gateway passes that on
unchanged; its own limit uses 429 because HTTP clients, retry policies (urllib3's ``Retry``, service
meshes) and load balancers honour ``429`` + ``Retry-After`` and count it as a failure, while SDKs that
read the body still find errcode 45009 ("slow down") there.
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from urllib.parse import urlsplit

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.errors import RateLimited
from gateway.observability.metrics import Metrics
from gateway.registry.model import Client, RateLimit

__all__ = [
    "ANONYMOUS",
    "DEFAULT_KEY_PREFIX",
    "LocalRateLimiter",
    "RateLimiter",
    "RedisRateLimiter",
    "create_rate_limiter",
]

log = logging.getLogger(__name__)

DEFAULT_KEY_PREFIX = "gateway:"
REDIS_TIMEOUT_S = 0.25  # Redis answers in well under a millisecond; this bounds what an outage adds
REDIS_RETRY_S = 1.0  # after a failure, how long the per-process buckets answer before Redis is tried again
WARN_INTERVAL_S = 60.0
MAX_KEY_TTL_MS = 86_400_000  # a bucket slower than a day to refill is forgotten after a day idle
ANONYMOUS = "anonymous"  # who an anonymous caller is in a refusal and in gateway_rate_limited_total

# KEYS[1]: the bucket, a hash {tokens, at}; ARGV: per second, burst, longest TTL (ms). Returns {allowed,
# retry after (s)}, the seconds as a string since Redis would truncate a Lua number to an integer. A
# refusal writes nothing: the bucket refills from its last state all the same.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
if tokens < 1 then
  return {0, tostring((1 - tokens) / rate)}
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens - 1), 'at', string.format('%.17g', now))
redis.call('PEXPIRE', KEYS[1], math.min(math.ceil(burst / rate * 1000) + 1000, tonumber(ARGV[3])))
return {1, '0'}
"""


class RateLimiter(ABC):
    """Admits a client's request or refuses it with `RateLimited`."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._metrics = metrics

    async def admit(self, client: Client) -> None:
        """Take one request from ``client``'s bucket; raise `RateLimited` when it is empty."""
        limit = client.rate_limit
        if limit is None:
            return
        allowed, retry_after_s = await self.take(client.id, limit)
        if not allowed:
            if self._metrics is not None:
                self._metrics.rate_limited.labels(client.id).inc()
            raise RateLimited(client.id, retry_after_s)

    async def admit_anonymous(self, bucket: str, limit: RateLimit) -> None:
        """Take one request from ``bucket``, shared by callers without a client key (``anonymous:`` keys,
        never a client id: those are slugs); raise `RateLimited` when it is empty."""
        allowed, retry_after_s = await self.take(f"anonymous:{bucket}", limit)
        if not allowed:
            if self._metrics is not None:
                self._metrics.rate_limited.labels(ANONYMOUS).inc()
            raise RateLimited(ANONYMOUS, retry_after_s)

    @abstractmethod
    async def take(self, client_id: str, limit: RateLimit) -> tuple[bool, float]:
        """Take one token: (allowed, seconds until one is available when not)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections, if any."""


class LocalRateLimiter(RateLimiter):
    """Buckets in this process, on a monotonic clock."""

    def __init__(
        self, metrics: Metrics | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(metrics)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client id → (tokens, at); one per client

    async def take(self, client_id: str, limit: RateLimit) -> tuple[bool, float]:
        """Take one token from ``client_id``'s bucket (see `RateLimiter.take`)."""
        return self.take_now(client_id, limit)

    def take_now(self, client_id: str, limit: RateLimit) -> tuple[bool, float]:
        """`take`, synchronously: nothing here waits."""
        now = self._clock()
        tokens, at = self._buckets.get(client_id, (float(limit.burst), now))
        tokens = min(float(limit.burst), tokens + max(0.0, now - at) * limit.per_second)
        if tokens < 1:
            return False, (1 - tokens) / limit.per_second
        self._buckets[client_id] = (tokens - 1, now)
        return True, 0.0

    async def aclose(self) -> None:
        """Nothing to release."""


class RedisRateLimiter(RateLimiter):
    """Buckets in Redis, shared by every replica; this process's buckets while Redis fails."""

    def __init__(
        self,
        url: str,
        metrics: Metrics | None = None,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(metrics)
        # One retry, at once: a pooled connection Redis closed (a restart) is replaced without a fallback.
        self._redis = redis.Redis.from_url(
            url,
            socket_connect_timeout=REDIS_TIMEOUT_S,
            socket_timeout=REDIS_TIMEOUT_S,
            retry=Retry(NoBackoff(), 1),
        )
        self._script = self._redis.register_script(_TAKE)  # EVALSHA, loading the script when missing
        self._prefix = f"{key_prefix}ratelimit:"
        self._where = _redacted(url)
        self._local = LocalRateLimiter(clock=clock)
        self._clock = clock
        self._retry_at = 0.0
        self._warned_at = -math.inf

    async def take(self, client_id: str, limit: RateLimit) -> tuple[bool, float]:
        """Take one token from the shared bucket (see `RateLimiter.take`)."""
        if self._clock() < self._retry_at:
            return self._local.take_now(client_id, limit)
        try:
            allowed, retry_after = await self._script(
                keys=[self._prefix + client_id], args=[repr(limit.per_second), limit.burst, MAX_KEY_TTL_MS]
            )
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return self._local.take_now(client_id, limit)
        if self._retry_at:
            self._retry_at = 0.0
            log.info("rate limits: Redis at %s answers again; limits are shared again", self._where)
        return bool(allowed), float(retry_after)

    def _failed(self, exc: BaseException) -> None:
        now = self._clock()
        self._retry_at = now + REDIS_RETRY_S
        if self._metrics is not None:
            self._metrics.rate_limit_redis_errors.inc()
        if now - self._warned_at >= WARN_INTERVAL_S:
            self._warned_at = now
            # The type only: a message may quote the URL, and with it a password.
            log.warning(
                "rate limits: Redis at %s failed (%s); limits are per process until it answers",
                self._where,
                type(exc).__name__,
            )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()


def create_rate_limiter(
    redis_url: str | None, metrics: Metrics | None = None, *, key_prefix: str = DEFAULT_KEY_PREFIX
) -> RateLimiter:
    """Shared buckets in Redis when ``redis_url`` is set, this process's otherwise."""
    if redis_url:
        return RedisRateLimiter(redis_url, metrics, key_prefix=key_prefix)
    return LocalRateLimiter(metrics)


def _redacted(url: str) -> str:
    """Where Redis is, for logs: host and port, never the password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname}:{parts.port or 6379}"

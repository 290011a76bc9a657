"""Prometheus metrics, one registry per app (so several apps in one process, as in tests, never clash)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["Metrics"]


class Metrics:
    """The gateway's counters and histograms. Labels name things, never secrets."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.wx_calls = Counter(
            "gateway_wx_calls",
            "Calls proxied on /wx, by client, platform, API and WeChat's errcode",
            ["client", "platform", "api", "errcode"],
            registry=self.registry,
        )
        self.wx_latency = Histogram(
            "gateway_wx_call_seconds",
            "Time to WeChat's answer (headers) for calls proxied on /wx",
            ["api"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.tokens_issued = Counter(
            "gateway_tokens_issued",
            "Tokens and tickets handed to internal apps",
            ["client", "platform", "kind"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "gateway_rate_limited",
            "Requests refused (429) because the client was past its rate limit",
            ["client"],
            registry=self.registry,
        )
        self.rate_limit_redis_errors = Counter(
            "gateway_rate_limit_redis_errors",
            "Rate-limit checks answered by this process's buckets because Redis failed",
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The exposition text for ``GET /metrics``."""
        return generate_latest(self.registry)

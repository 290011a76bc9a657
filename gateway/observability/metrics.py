"""Prometheus metrics, one registry per app (so several apps in one process, as in tests, never clash).

Counters and histograms are updated where things happen. The gauges of shared state — ticket ages,
open 45009 breakers, deliveries by status — are read from the database when ``/metrics`` is scraped
(``sample``), so every replica reports the same, current values whoever did the work. The upstream
breakers (``gateway.wechat.breaker``) live in each process: their gauge is this replica's, set at each
transition.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Iterable, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from gateway import __version__
from gateway.wechat.breaker import BreakerKey, BreakerState

__all__ = ["CREDENTIAL_KINDS", "Metrics"]

CREDENTIAL_KINDS = ("component", "authorizer", "jsapi")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """The gateway's counters, histograms and gauges. Labels name things, never secrets, and take
    bounded values only: route templates, API names, registry ids, WeChat errcodes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "gateway_http_requests",
            "HTTP requests answered, by route template (unmatched: no route), method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "gateway_http_request_seconds",
            "Time from a request's arrival to the end of its answer, by route template",
            ["route"],
            registry=self.registry,
            buckets=_LATENCY_BUCKETS,
        )
        self.wechat_calls = Counter(
            "gateway_wechat_calls",
            "The gateway's own calls to WeChat, each attempt, by API and errcode (or timeout, "
            "unreachable, http_5xx, malformed when WeChat gave no answer)",
            ["api", "errcode"],
            registry=self.registry,
        )
        self.wechat_latency = Histogram(
            "gateway_wechat_call_seconds",
            "Time to WeChat's answer for the gateway's own calls, each attempt",
            ["api"],
            registry=self.registry,
            buckets=_LATENCY_BUCKETS,
        )
        self.renewals = Counter(
            "gateway_renewals",
            "Renewals of tokens and tickets fetched from WeChat by this replica, by kind, platform and "
            "outcome (ok, or the API error code callers get)",
            ["kind", "platform", "outcome"],
            registry=self.registry,
        )
        self.quota_errors = Counter(
            "gateway_quota_errors",
            "WeChat's 45009 (daily quota used up) on token fetches and on proxied calls, by platform and API",
            ["platform", "api"],
            registry=self.registry,
        )
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
            buckets=_LATENCY_BUCKETS,
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
        self.database_up = Gauge(
            "gateway_database_up",
            "1 when the database answered the last scrape's reads, else 0 (the gauges below are then absent)",
            registry=self.registry,
        )
        self.ticket_age = Gauge(
            "gateway_ticket_age_seconds",
            "Age of the newest component_verify_ticket, by platform; +Inf when none was ever received",
            ["platform"],
            registry=self.registry,
        )
        self.quota_held = Gauge(
            "gateway_quota_held_credentials",
            "Credentials whose renewal the 45009 breaker holds until the quota resets or is cleared",
            ["kind", "platform"],
            registry=self.registry,
        )
        self.upstream_breaker_state = Gauge(
            "gateway_upstream_breaker_state",
            "This replica's breaker on calls to WeChat, by platform (* when the call named none) and API "
            "family: 0 closed, 1 open (calls fail fast), 2 half-open (one trial call)",
            ["platform", "family"],
            registry=self.registry,
        )
        self.upstream_breaker_transitions = Counter(
            "gateway_upstream_breaker_transitions",
            "Transitions of this replica's breakers on calls to WeChat, by platform, API family and the "
            "state entered (closed, open, half_open)",
            ["platform", "family", "state"],
            registry=self.registry,
        )
        self.deliveries = Gauge(
            "gateway_deliveries",
            "Deliveries to subscribers, by status",
            ["status"],
            registry=self.registry,
        )
        self.registry_info = Gauge(
            "gateway_registry_info",
            "1, labelled with the sha-256 of the registry file this replica runs (unknown: not read from "
            "a file)",
            ["sha256"],
            registry=self.registry,
        )
        self.registry_loaded_at = Gauge(
            "gateway_registry_last_reload_timestamp_seconds",
            "When this replica put the registry in force: start-up, or the last reload that swapped one in",
            registry=self.registry,
        )
        self.registry_reloads = Counter(
            "gateway_registry_reloads",
            "Registry reloads of this replica (SIGHUP, file watch, admin endpoint), by outcome: ok, or "
            "refused (the file did not validate and the running registry stays)",
            ["outcome"],
            registry=self.registry,
        )
        build = Gauge(
            "gateway_build_info",
            "1, labelled with the gateway's version and the Python it runs on",
            ["version", "python"],
            registry=self.registry,
        )
        build.labels(__version__, platform.python_version()).set(1)
        # CPU, memory, open files and start time of the process; the Python implementation and version.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    def registry_in_force(self, sha256: str | None, since: float) -> None:
        """The registry in force is the file of ``sha256`` (None: not read from a file), since ``since``."""
        self.registry_info.clear()
        self.registry_info.labels(sha256 or "unknown").set(1)
        self.registry_loaded_at.set(since)

    def registry_reloaded(self, ok: bool) -> None:
        """A reload swapped a registry in, or was refused."""
        self.registry_reloads.labels("ok" if ok else "refused").inc()

    def observe_wechat_call(self, api: str, errcode: str, seconds: float) -> None:
        """One attempt of a call to WeChat (``WeChatClient``'s observer)."""
        self.wechat_calls.labels(api, errcode).inc()
        self.wechat_latency.labels(api).observe(seconds)

    def breaker_changed(self, key: BreakerKey, state: BreakerState) -> None:
        """An upstream breaker moved (``UpstreamBreakers``' ``on_change``)."""
        self.upstream_breaker_state.labels(key.platform, key.family).set(int(state))
        self.upstream_breaker_transitions.labels(key.platform, key.family, state.name.lower()).inc()

    def sample(
        self,
        platforms: Iterable[str],
        received_at: Mapping[str, float],
        blocked: Iterable[tuple[str, str]],
        deliveries: Mapping[str, int],
        now: float,
    ) -> None:
        """Set the state gauges from one read of the database: tickets' ``received_at`` by platform,
        the (kind, platform) of each credential under an open breaker, deliveries by status.

        Series are rebuilt whole, so a platform removed from the registry disappears from them.
        """
        self.database_up.set(1)
        self.ticket_age.clear()
        self.quota_held.clear()
        known = set(platforms)
        for platform_id in sorted(known):
            received = received_at.get(platform_id)
            self.ticket_age.labels(platform_id).set(
                math.inf if received is None else max(0.0, now - received)
            )
            for kind in CREDENTIAL_KINDS:
                self.quota_held.labels(kind, platform_id).set(0)
        for kind, platform_id in blocked:
            if platform_id in known and kind in CREDENTIAL_KINDS:
                self.quota_held.labels(kind, platform_id).inc()
        for status, count in deliveries.items():
            self.deliveries.labels(status).set(count)

    def sample_failed(self) -> None:
        """The database did not answer: drop the state gauges rather than show stale values."""
        self.database_up.set(0)
        for gauge in (self.ticket_age, self.quota_held, self.deliveries):
            gauge.clear()

    def render(self) -> bytes:
        """The exposition text for ``GET /metrics``."""
        return generate_latest(self.registry)

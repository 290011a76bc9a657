"""Liveness and readiness (`HealthController`), and metrics (`MetricsController`: on the public port,
or alone on the admin port when ``GATEWAY_ADMIN_PORT`` is set)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import msgspec
from litestar import Controller, Response, get
from litestar.di import NamedDependency

from gateway.credentials.tokens import CredentialKey
from gateway.observability.metrics import Metrics
from gateway.registry.model import Registry
from gateway.store import Store
from gateway.store.credentials import StoredCredential

__all__ = ["HealthController", "MetricsController", "PlatformReadiness", "Readiness"]

log = logging.getLogger(__name__)

TICKET_LIFETIME_S = 12 * 3600
TICKET_PUSH_INTERVAL_S = 600


class PlatformReadiness(msgspec.Struct, frozen=True):
    """One platform's credentials as far as the gateway can tell."""

    id: str
    ticket_age_s: int | None
    component_token_expires_in: int | None
    problem: str | None


class Readiness(msgspec.Struct, frozen=True):
    """``/readyz``: ready when the database answers and the registry is loaded."""

    status: str
    platforms: list[PlatformReadiness]


class Alive(msgspec.Struct, frozen=True):
    """``/healthz``."""

    status: str


class HealthController(Controller):
    """Probes for load balancers and orchestrators."""

    tags = ["operations"]

    @get("/healthz", cache=False)
    async def healthz(self) -> Alive:
        """The process is alive."""
        return Alive("ok")

    @get("/readyz", cache=False)
    async def readyz(
        self,
        store: NamedDependency[Store],
        registry: NamedDependency[Registry],
        clock: NamedDependency[Callable[[], float]],
    ) -> Response[Readiness]:
        """Ready to serve; each platform says whether it has a ticket, and how old it is."""
        try:
            await store.ping()
            receipts = await store.ticket_receipts()
            component_tokens = {
                c.key.removeprefix("component:"): c for c in await store.credentials.get_many("component:")
            }
        except Exception as exc:  # any database failure means "not ready", whatever its kind
            log.warning("readiness: database unavailable: %s", type(exc).__name__)
            down = [PlatformReadiness(p.id, None, None, "database unavailable") for p in registry.platforms]
            return Response(Readiness("not_ready", down), status_code=503)
        now = clock()
        platforms = [
            _platform_readiness(p.id, receipts.get(p.id), component_tokens.get(p.id), now)
            for p in registry.platforms
        ]
        return Response(Readiness("ready", platforms), status_code=200)


class MetricsController(Controller):
    """Prometheus' scrape."""

    tags = ["operations"]

    @get("/metrics", cache=False, media_type="text/plain; version=0.0.4")
    async def metrics(
        self,
        metrics: NamedDependency[Metrics],
        store: NamedDependency[Store],
        registry: NamedDependency[Registry],
        clock: NamedDependency[Callable[[], float]],
    ) -> bytes:
        """Prometheus exposition; the gauges of shared state (ticket ages, open breakers, deliveries)
        are read from the database now, so that every replica reports current values."""
        try:
            now = clock()
            receipts = await store.ticket_receipts()
            blocked = [CredentialKey.parse(key) for key in await store.credentials.blocked(now)]
            deliveries = await store.deliveries.counts()
        except Exception as exc:  # the counters are still worth a scrape when the database is down
            log.warning("metrics: database unavailable: %s", type(exc).__name__)
            metrics.sample_failed()
        else:
            metrics.sample(
                (p.id for p in registry.platforms),
                receipts,
                ((key.kind, key.platform_id) for key in blocked),
                deliveries,
                now,
            )
        return metrics.render()


def _platform_readiness(
    platform_id: str, received_at: float | None, token: StoredCredential | None, now: float
) -> PlatformReadiness:
    expires_in = None
    if token is not None and token.expires_at is not None and token.expires_at > now:
        expires_in = int(token.expires_at - now)
    if received_at is None:
        return PlatformReadiness(platform_id, None, expires_in, "no component_verify_ticket received yet")
    age = max(0, int(now - received_at))
    problem = token.problem if token is not None else None
    if age > TICKET_LIFETIME_S:
        problem = "the newest component_verify_ticket is older than 12 h and has expired"
    elif age > 3 * TICKET_PUSH_INTERVAL_S:
        problem = f"no component_verify_ticket pushed for {age // 60} minutes (WeChat pushes every 10)"
    return PlatformReadiness(platform_id, age, expires_in, problem)

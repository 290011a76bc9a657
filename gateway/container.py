"""The composition root: every service of the gateway, built once from the settings and the registry.

`gateway.http.app.create_app` serves them and the command line runs its operations on them; nothing else
builds a service. Building opens nothing (no connection, no task): `Services.running` does, and closes
it all again. Every service reads the registry through the one `LiveRegistry` built here, so a reload
reaches them all with one swap.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from gateway.access.ratelimit import RateLimiter, create_rate_limiter
from gateway.access.service import TokenVending
from gateway.authorizations.service import AuthorizationService
from gateway.binding.service import OpenBindingService
from gateway.callbacks.inbox import Inbox
from gateway.callbacks.intake import EventIntake
from gateway.callbacks.messages import HandlerChain, MessageService
from gateway.callbacks.release_test import ReleaseTest
from gateway.catalog.service import Catalog
from gateway.catalog.sync import CatalogSync
from gateway.credentials.quota import QuotaClearing
from gateway.credentials.tokens import TokenService
from gateway.delivery.subscriptions import Subscriptions
from gateway.delivery.webhooks import WebhookSender, new_webhook_client
from gateway.delivery.worker import DeliveryPolicy, DeliveryService
from gateway.observability.metrics import Metrics
from gateway.onboarding.invites import INVITE_KEY_PURPOSE, InviteSigner
from gateway.onboarding.service import Onboarding
from gateway.proxy.policy import WxProxy
from gateway.registry.live import LiveRegistry, RegistryChanges, ReloadOutcome
from gateway.registry.model import Registry
from gateway.settings import Settings
from gateway.store import Store, create_engine, upgrade
from gateway.store.audit_trail import AuditTrail
from gateway.store.retention import EventRetention
from gateway.wechat.breaker import BreakerPolicy, UpstreamBreakers
from gateway.wechat.client import WeChatClient, new_http_client

__all__ = ["Services", "build_services"]


@dataclass(frozen=True)
class Services:
    """Every service one process runs on; also ``app.state.services`` of the app serving them."""

    settings: Settings
    registry: LiveRegistry
    clock: Callable[[], float]
    store: Store
    http: httpx.AsyncClient  # the one pooled client to WeChat, shared by the /wx proxy
    webhooks: httpx.AsyncClient  # the subscribers' own client
    metrics: Metrics
    limiter: RateLimiter
    wechat: WeChatClient
    audit: AuditTrail
    tokens: TokenService
    authorizations: AuthorizationService
    intake: EventIntake
    vending: TokenVending
    proxy: WxProxy
    quota: QuotaClearing
    onboarding: Onboarding
    binding: OpenBindingService
    catalog: Catalog
    catalog_sync: CatalogSync
    subscriptions: Subscriptions
    deliveries: DeliveryService
    messages: MessageService
    retention: EventRetention

    @asynccontextmanager
    async def running(self, *, migrate: bool = True, background: bool = True) -> AsyncIterator[Services]:
        """The services open: the schema applied (``migrate``), the audit flush running, and with
        ``background`` the workers every replica runs (token renewer, authorization events, deliveries,
        event retention, the catalog sync schedule); on leaving, the workers stopped and every client,
        the limiter and the engine closed, for good: a `Services` runs once."""
        settings = self.settings
        stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        try:
            if migrate:
                await upgrade(self.store.engine)
            if background:
                tasks += [
                    asyncio.create_task(self.tokens.run_renewer(stop), name="token-renewer"),
                    asyncio.create_task(self.authorizations.run_worker(stop), name="authorization-events"),
                    asyncio.create_task(self.deliveries.run_worker(stop), name="deliveries"),
                    # Always runs: with a retention of 0 it still deletes the codes no arrival needs.
                    asyncio.create_task(self.retention.run(stop), name="event-retention"),
                ]
                if settings.catalog_sync_interval_s:
                    schedule = self.catalog_sync.run_schedule(stop, settings.catalog_sync_interval_s)
                    tasks.append(asyncio.create_task(schedule, name="catalog-sync"))
            retention_s = settings.audit_retention_days * 86400 or None
            flush = self.audit.run(stop, retention_s=retention_s)
            tasks.append(asyncio.create_task(flush, name="audit-flush"))
            yield self
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.webhooks.aclose()
            await self.http.aclose()
            await self.limiter.aclose()
            await self.store.aclose()


def build_services(
    settings: Settings,
    registry: Registry,
    *,
    clock: Callable[[], float] = time.time,
    transport: httpx.AsyncBaseTransport | None = None,
    delivery_policy: DeliveryPolicy | None = None,
    registry_sha256: str | None = None,
) -> Services:
    """Every service, starting with ``registry`` (a reload swaps in another: `LiveRegistry`), read from
    the file of ``registry_sha256`` if it was.

    ``transport`` replaces the network under the upstream client (tests reach the simulator in-process
    this way); ``delivery_policy`` sets the pace of forwarding to subscribers.
    """
    store = Store(create_engine(settings.database_url), settings.secret_box, clock=clock)
    live = LiveRegistry(registry, sha256=registry_sha256, clock=clock)
    http = new_http_client(transport=transport)
    metrics = Metrics()
    metrics.registry_in_force(live.sha256, live.loaded_at)
    breakers = UpstreamBreakers(
        BreakerPolicy(settings.upstream_breaker_threshold, settings.upstream_breaker_cooldown_s),
        on_change=metrics.breaker_changed,
    )

    def forget_breakers(changes: RegistryChanges) -> None:
        # What the old host did says nothing of a new one (a disaster-recovery host, say); a removed
        # platform's breakers would otherwise stay in the metrics as they were.
        if changes.api_base_changed:
            breakers.forget()
        elif changes.platforms_removed:
            breakers.forget(changes.platforms_removed)

    live.on_swap(forget_breakers)

    wechat = WeChatClient(
        http,
        lambda: live.current.wechat.api_base,
        observe=metrics.observe_wechat_call,
        breakers=breakers,
    )
    # Names this process in leases and claims shared with the other replicas.
    owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
    tokens = TokenService(
        live,
        store,
        wechat,
        owner=owner,
        clock=clock,
        lease_s=settings.renewal_lease_s,
        metrics=metrics,
        warm_window_s=settings.token_warm_window_s,
    )
    audit = AuditTrail(store.audit, clock=clock)

    def reloaded(outcome: ReloadOutcome) -> None:
        metrics.registry_reloaded(outcome.ok)
        if outcome.ok:
            metrics.registry_in_force(live.sha256, live.loaded_at)
        action = "registry.reloaded" if outcome.ok else "registry.reload_refused"
        detail = f"sha256={outcome.sha256 or 'unreadable'} source={outcome.source}: {outcome.detail}"
        audit.record(outcome.actor, action, detail=detail[:400])  # the column's size

    live.on_reload(reloaded)
    authorizations = AuthorizationService(live, store, tokens, audit, clock=clock, owner=owner)
    intake = EventIntake(
        live,
        store,
        window_s=settings.push_window_s,
        clock=clock,
        on_authorization_event=authorizations.wake,
    )
    limiter = create_rate_limiter(settings.redis_url, metrics, key_prefix=settings.redis_key_prefix)
    vending = TokenVending(live, authorizations, tokens, audit, limiter)
    proxy = WxProxy(
        live,
        store.gateway_tokens,
        tokens,
        authorizations,
        audit,
        http,
        metrics,
        limiter,
        clock=clock,
        breakers=breakers,
    )
    invites = InviteSigner(settings.secret_box.derive(INVITE_KEY_PURPOSE), clock=clock)
    onboarding = Onboarding(
        live,
        settings.public_url,
        store.authorizations,
        tokens,
        authorizations,
        audit,
        invites,
        clock=clock,
    )
    binding = OpenBindingService(
        live,
        store.credentials,
        store.authorizations,
        store.open_accounts,
        tokens,
        authorizations,
        audit,
    )
    subscriptions = Subscriptions(live)
    webhooks = new_webhook_client()
    deliveries = DeliveryService(
        subscriptions,
        store.deliveries,
        WebhookSender(webhooks, clock=clock),
        audit,
        owner=owner,
        policy=delivery_policy or DeliveryPolicy(attempt_timeout_s=settings.delivery_timeout_s),
        clock=clock,
    )
    inbox = Inbox(subscriptions, store.deliveries, authorizations, deliveries, clock=clock)
    messages = MessageService(
        live,
        HandlerChain(ReleaseTest(authorizations, tokens), inbox),
        window_s=settings.push_window_s,
        clock=clock,
    )
    catalog_sync = CatalogSync(
        live,
        store.credentials,
        store.authorizations,
        tokens,
        authorizations,
        binding,
        audit,
        owner=owner,
        lease_s=settings.renewal_lease_s,
        binding_recheck_s=settings.binding_recheck_s,
        clock=clock,
    )
    return Services(
        settings=settings,
        registry=live,
        clock=clock,
        store=store,
        http=http,
        webhooks=webhooks,
        metrics=metrics,
        limiter=limiter,
        wechat=wechat,
        audit=audit,
        tokens=tokens,
        authorizations=authorizations,
        intake=intake,
        vending=vending,
        proxy=proxy,
        quota=QuotaClearing(live, wechat, store.credentials, audit),
        onboarding=onboarding,
        binding=binding,
        catalog=Catalog(live, store.catalog, clock=clock),
        catalog_sync=catalog_sync,
        subscriptions=subscriptions,
        deliveries=deliveries,
        messages=messages,
        retention=EventRetention(store, settings.event_retention_days * 86400, clock=clock),
    )

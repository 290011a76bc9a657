"""``create_app``: the gateway's wiring. Nothing is built at import time.

Data flows one way: registry → platform credentials (tokens) → upstream client → services → routes.
The lifespan owns what must be opened and closed: the database schema and engine, the one pooled
httpx client, the subscribers' client, the background tasks (token renewer, authorization events,
deliveries, audit flush, catalog sync) and the SIGHUP reload of the registry. Every service reads the
registry through one `LiveRegistry`, so a reload reaches them all with one swap.
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
from pathlib import Path

import httpx
from litestar import Litestar, Router
from litestar.datastructures import CacheControlHeader, State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from gateway import __version__
from gateway.access.ratelimit import create_rate_limiter
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
from gateway.http.catalog import CatalogController
from gateway.http.deliveries import DeliveriesController
from gateway.http.errors import HOUSE_HANDLERS, PUSH_HANDLERS, WECHAT_HANDLERS
from gateway.http.event_url import answer_pushes_up_front
from gateway.http.health import HealthController
from gateway.http.limits import MAX_BODY_BYTES, refuse_announced_oversize
from gateway.http.messages import WeChatMessagesController
from gateway.http.observe import observed
from gateway.http.pages import CatalogPagesController
from gateway.http.quota import QuotaController
from gateway.http.sessions import WebSessions
from gateway.http.tokens_from_memory import answer_tokens_from_memory
from gateway.http.v1 import (
    AuthorizerTokensController,
    OpenBindingController,
    PlatformsController,
    provide_client,
)
from gateway.http.wechat import WeChatEventsController
from gateway.http.wx import WxController
from gateway.http.wx_front import answer_wx_calls_up_front
from gateway.observability.metrics import Metrics
from gateway.onboarding.invites import INVITE_KEY_PURPOSE, InviteSigner
from gateway.onboarding.service import Onboarding
from gateway.proxy.policy import WxProxy
from gateway.registry.live import LiveRegistry, RegistryChanges, reload_on_sighup
from gateway.registry.model import Registry
from gateway.settings import Settings
from gateway.store import Store, create_engine, upgrade
from gateway.store.audit_trail import AuditTrail
from gateway.store.retention import EventRetention
from gateway.wechat.breaker import BreakerPolicy, UpstreamBreakers
from gateway.wechat.client import WeChatClient, new_http_client

__all__ = ["Services", "create_app"]

_STATIC_CACHE = CacheControlHeader(max_age=3600, public=True)  # the pages' stylesheet and icon


@dataclass(frozen=True)
class Services:
    """The services one app is built from; also on ``app.state.services`` for operations and tests."""

    registry: LiveRegistry
    store: Store
    tokens: TokenService
    authorizations: AuthorizationService
    audit: AuditTrail
    intake: EventIntake
    vending: TokenVending
    proxy: WxProxy
    metrics: Metrics
    onboarding: Onboarding
    binding: OpenBindingService
    messages: MessageService
    catalog_sync: CatalogSync
    subscriptions: Subscriptions
    deliveries: DeliveryService


def _constant(value: object) -> Provide:
    def provide() -> object:
        return value

    return Provide(provide, sync_to_thread=False, use_cache=True)


def create_app(
    settings: Settings,
    registry: Registry,
    *,
    clock: Callable[[], float] = time.time,
    migrate: bool = True,
    background: bool = True,
    transport: httpx.AsyncBaseTransport | None = None,
    delivery_policy: DeliveryPolicy | None = None,
) -> Litestar:
    """Build the gateway, starting with ``registry`` (a reload swaps in another: `LiveRegistry`).

    ``migrate`` applies the schema on start-up; ``background`` runs the renewer, the authorization
    event worker, the delivery worker, event retention and the catalog sync schedule (the audit flush
    always runs);
    ``transport`` replaces the network under the upstream client (tests reach the simulator in-process
    this way); ``delivery_policy`` sets the pace of forwarding to subscribers.
    """
    engine = create_engine(settings.database_url)
    store = Store(engine, settings.secret_box, clock=clock)
    live = LiveRegistry(registry)
    http = new_http_client(transport=transport)
    metrics = Metrics()
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
        live, store, tokens, authorizations, audit, http, metrics, limiter, clock=clock, breakers=breakers
    )
    invites = InviteSigner(settings.secret_box.derive(INVITE_KEY_PURPOSE), clock=clock)
    onboarding = Onboarding(
        live, settings.public_url, store, tokens, authorizations, audit, invites, clock=clock
    )
    binding = OpenBindingService(live, store, tokens, authorizations, audit)
    catalog = Catalog(live, store.catalog, clock=clock)
    sessions = WebSessions(
        live, store.web_sessions, secure_cookies=settings.public_url.startswith("https://"), clock=clock
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
    inbox = Inbox(subscriptions, store, authorizations, deliveries, clock=clock)
    messages = MessageService(
        live,
        HandlerChain(ReleaseTest(authorizations, tokens), inbox),
        window_s=settings.push_window_s,
        clock=clock,
    )
    catalog_sync = CatalogSync(
        live,
        store,
        tokens,
        authorizations,
        binding,
        audit,
        owner=owner,
        lease_s=settings.renewal_lease_s,
        binding_recheck_s=settings.binding_recheck_s,
        clock=clock,
    )
    services = Services(
        live,
        store,
        tokens,
        authorizations,
        audit,
        intake,
        vending,
        proxy,
        metrics,
        onboarding,
        binding,
        messages,
        catalog_sync,
        subscriptions,
        deliveries,
    )

    def current_registry() -> Registry:
        """The registry in force when a request asks (never cached: a reload swaps it)."""
        return live.current

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        if migrate:
            await upgrade(engine)
        stop = asyncio.Event()
        tasks = []
        if background:
            tasks = [
                asyncio.create_task(tokens.run_renewer(stop), name="token-renewer"),
                asyncio.create_task(authorizations.run_worker(stop), name="authorization-events"),
                asyncio.create_task(deliveries.run_worker(stop), name="deliveries"),
            ]
            # Always runs: with a retention of 0 it still deletes the codes no arrival needs.
            retention = EventRetention(store, settings.event_retention_days * 86400, clock=clock)
            tasks.append(asyncio.create_task(retention.run(stop), name="event-retention"))
            if settings.catalog_sync_interval_s:
                tasks.append(
                    asyncio.create_task(
                        catalog_sync.run_schedule(stop, settings.catalog_sync_interval_s), name="catalog-sync"
                    )
                )
        retention_s = settings.audit_retention_days * 86400 or None
        tasks.append(asyncio.create_task(audit.run(stop, retention_s=retention_s), name="audit-flush"))
        try:
            with reload_on_sighup(live, settings.config_path, settings.pid_file):
                yield
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await webhooks.aclose()
            await http.aclose()
            await limiter.aclose()
            await store.aclose()

    # Each audience's router renders errors in its shape (gateway.http.errors); the app's own handlers
    # answer everything else (routing, health, the pages' fallbacks) in the house's.
    app = Litestar(
        route_handlers=[
            HealthController,
            Router(
                "/",
                route_handlers=[WeChatEventsController, WeChatMessagesController],
                exception_handlers=PUSH_HANDLERS,
            ),
            Router(
                "/",
                route_handlers=[
                    AuthorizerTokensController,
                    PlatformsController,
                    OpenBindingController,
                    CatalogController,
                    DeliveriesController,
                    QuotaController,
                ],
                exception_handlers=HOUSE_HANDLERS,
            ),
            CatalogPagesController,
            Router("/", route_handlers=[WxController], exception_handlers=WECHAT_HANDLERS),
            create_static_files_router(
                "/static", [Path(__file__).with_name("static")], cache_control=_STATIC_CACHE
            ),
        ],
        template_config=TemplateConfig(
            directory=Path(__file__).with_name("templates"), engine=JinjaTemplateEngine
        ),
        dependencies={
            "settings": _constant(settings),
            "registry": Provide(current_registry, sync_to_thread=False),
            "store": _constant(store),
            "intake": _constant(intake),
            "messages": _constant(messages),
            "tokens": _constant(tokens),
            "authorizations": _constant(authorizations),
            "vending": _constant(vending),
            "proxy": _constant(proxy),
            "metrics": _constant(metrics),
            "onboarding": _constant(onboarding),
            "binding": _constant(binding),
            "catalog": _constant(catalog),
            "deliveries": _constant(deliveries),
            "quota": _constant(QuotaClearing(live, wechat, store.credentials, audit)),
            "sessions": _constant(sessions),
            "clock": _constant(clock),
            "client": Provide(provide_client),
        },
        exception_handlers=HOUSE_HANDLERS,
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(title="Group Gateway", version=__version__, path="/schema"),
        logging_config=None,  # the process (CLI, tests) owns logging
        request_max_body_size=MAX_BODY_BYTES,
        before_request=refuse_announced_oversize,
        state=State({"services": services}),
    )
    # The busiest routes, and the event URL, are answered in front of Litestar's request pipeline, their
    # errors by their routers' handlers.
    front = answer_tokens_from_memory(app.asgi_handler, vending, HOUSE_HANDLERS)
    front = answer_wx_calls_up_front(front, proxy, WECHAT_HANDLERS)
    app.asgi_handler = observed(answer_pushes_up_front(front, intake, PUSH_HANDLERS), metrics)
    return app

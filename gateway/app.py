"""``create_app``: the gateway's wiring. Nothing is built at import time.

Data flows one way: registry → platform credentials (tokens) → upstream client → services → routes.
The lifespan owns what must be opened and closed: the database schema and engine, the one pooled
httpx client, the subscribers' client, the background tasks (token renewer, authorization events,
deliveries, audit flush, catalog sync) and the SIGHUP reload of subscriptions.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from litestar import Litestar
from litestar.datastructures import CacheControlHeader, State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from gateway import __version__
from gateway.access import TokenVending
from gateway.audit import AuditTrail
from gateway.authorizations import AuthorizationService
from gateway.binding import OpenBindingService
from gateway.catalog import Catalog
from gateway.catalog_sync import CatalogSync
from gateway.delivery import DeliveryPolicy, DeliveryService
from gateway.http.catalog import CatalogController
from gateway.http.deliveries import DeliveriesController
from gateway.http.errors import exception_handlers
from gateway.http.health import HealthController
from gateway.http.limits import MAX_BODY_BYTES, refuse_announced_oversize
from gateway.http.messages import WeChatMessagesController
from gateway.http.pages import CatalogPagesController
from gateway.http.quota import QuotaController
from gateway.http.v1 import (
    AuthorizerTokensController,
    OpenBindingController,
    PlatformsController,
    provide_client,
)
from gateway.http.wechat import WeChatEventsController
from gateway.http.wx import WxController
from gateway.inbox import Inbox
from gateway.intake import EventIntake
from gateway.messages import HandlerChain, MessageService
from gateway.metrics import Metrics
from gateway.onboarding import Onboarding
from gateway.proxy import WxProxy
from gateway.quota import QuotaClearing
from gateway.ratelimit import create_rate_limiter
from gateway.registry import Registry
from gateway.release_test import ReleaseTest
from gateway.sessions import WebSessions
from gateway.settings import Settings
from gateway.store import Store, create_engine, upgrade
from gateway.subscriptions import Subscriptions
from gateway.tokens import TokenService
from gateway.webhooks import WebhookSender, new_webhook_client
from gateway.wechat import WeChatClient, new_http_client

__all__ = ["Services", "create_app"]

_STATIC_CACHE = CacheControlHeader(max_age=3600, public=True)  # the pages' stylesheet and icon


@dataclass(frozen=True)
class Services:
    """The services one app is built from; also on ``app.state.services`` for operations and tests."""

    registry: Registry
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


@contextmanager
def _on_sighup(reload: Callable[[], object]) -> Iterator[None]:
    """Run ``reload`` on SIGHUP while the app is up, where the loop can take signals (the main thread
    of a POSIX process; not the threads tests serve apps in)."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, reload)
    except (ValueError, RuntimeError, NotImplementedError, AttributeError):
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)


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
    """Build the gateway for one registry.

    ``migrate`` applies the schema on start-up; ``background`` runs the renewer, the authorization
    event worker, the delivery worker and the catalog sync schedule (the audit flush always runs);
    ``transport`` replaces the network under the upstream client (tests reach the simulator in-process
    this way); ``delivery_policy`` sets the pace of forwarding to subscribers.
    """
    engine = create_engine(settings.database_url)
    store = Store(engine, settings.secret_box, clock=clock)
    http = new_http_client(transport=transport)
    wechat = WeChatClient(http, registry.wechat.api_base)
    owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
    tokens = TokenService(registry, store, wechat, owner=owner, clock=clock, lease_s=settings.renewal_lease_s)
    audit = AuditTrail(store.audit, clock=clock)
    authorizations = AuthorizationService(registry, store, wechat, tokens, audit, clock=clock)
    intake = EventIntake(
        registry,
        store,
        window_s=settings.push_window_s,
        clock=clock,
        on_authorization_event=authorizations.wake,
    )
    metrics = Metrics()
    limiter = create_rate_limiter(settings.redis_url, metrics, key_prefix=settings.redis_key_prefix)
    vending = TokenVending(registry, authorizations, tokens, audit, limiter)
    proxy = WxProxy(registry, store, tokens, authorizations, audit, http, metrics, limiter, clock=clock)
    onboarding = Onboarding(
        registry, settings.public_url, store, tokens, wechat, authorizations, audit, clock=clock
    )
    binding = OpenBindingService(registry, store, tokens, wechat, authorizations, audit)
    catalog = Catalog(registry, store.catalog, clock=clock)
    sessions = WebSessions(
        registry, store.web_sessions, secure_cookies=settings.public_url.startswith("https://"), clock=clock
    )
    subscriptions = Subscriptions(registry.subscriptions)
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
    inbox = Inbox(subscriptions, store, deliveries, clock=clock)
    messages = MessageService(
        registry,
        HandlerChain(ReleaseTest(authorizations, tokens, wechat), inbox),
        window_s=settings.push_window_s,
        clock=clock,
    )
    catalog_sync = CatalogSync(
        registry,
        store,
        tokens,
        wechat,
        authorizations,
        binding,
        audit,
        owner=owner,
        lease_s=settings.renewal_lease_s,
    )
    services = Services(
        registry,
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
            if settings.catalog_sync_interval_s:
                tasks.append(
                    asyncio.create_task(
                        catalog_sync.run_schedule(stop, settings.catalog_sync_interval_s), name="catalog-sync"
                    )
                )
        tasks.append(asyncio.create_task(audit.run(stop), name="audit-flush"))
        try:
            with _on_sighup(lambda: subscriptions.reload(settings.config_path)):
                yield
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await webhooks.aclose()
            await http.aclose()
            await limiter.aclose()
            await engine.dispose()

    return Litestar(
        route_handlers=[
            HealthController,
            WeChatEventsController,
            WeChatMessagesController,
            AuthorizerTokensController,
            PlatformsController,
            OpenBindingController,
            CatalogController,
            CatalogPagesController,
            DeliveriesController,
            QuotaController,
            WxController,
            create_static_files_router(
                "/static", [Path(__file__).with_name("static")], cache_control=_STATIC_CACHE
            ),
        ],
        template_config=TemplateConfig(
            directory=Path(__file__).with_name("templates"), engine=JinjaTemplateEngine
        ),
        dependencies={
            "settings": _constant(settings),
            "registry": _constant(registry),
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
            "quota": _constant(QuotaClearing(registry, wechat, store.credentials, audit)),
            "sessions": _constant(sessions),
            "clock": _constant(clock),
            "client": Provide(provide_client),
        },
        exception_handlers=exception_handlers,  # type: ignore[arg-type]
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(title="Group Gateway", version=__version__, path="/schema"),
        logging_config=None,  # the process (CLI, tests) owns logging
        request_max_body_size=MAX_BODY_BYTES,
        before_request=refuse_announced_oversize,
        state=State({"services": services}),
    )

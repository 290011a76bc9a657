"""``create_app``: the gateway's routes over the services of `gateway.container`. Nothing is built at
import time.

The lifespan opens the services (`Services.running`: schema, clients, workers) and, while serving, takes
SIGHUP as a reload of the registry. Routes reach the services through Litestar's dependencies, by name.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from litestar import Litestar, Router
from litestar.datastructures import CacheControlHeader, State
from litestar.di import Provide
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from gateway.container import Services, build_services
from gateway.delivery.worker import DeliveryPolicy
from gateway.errors import ConfigError
from gateway.http.admin import RegistryController
from gateway.http.catalog import AuditLogController, CatalogController
from gateway.http.deliveries import DeliveriesController
from gateway.http.errors import HOUSE_HANDLERS, PUSH_HANDLERS, WECHAT_HANDLERS
from gateway.http.fast_lane import fast_lane, fast_routes
from gateway.http.guards import ACCESS, provide_client
from gateway.http.health import HealthController, MetricsController
from gateway.http.limits import MAX_BODY_BYTES, refuse_announced_oversize
from gateway.http.messages import WeChatMessagesController
from gateway.http.observe import observed
from gateway.http.openapi import openapi_config
from gateway.http.pages import catalog_pages
from gateway.http.quota import QuotaController
from gateway.http.sessions import SESSION_STORE, SessionStore, WebSessions
from gateway.http.v1 import AuthorizerTokensController, OpenBindingController, PlatformsController
from gateway.http.wechat import WeChatEventsController
from gateway.http.wx import WxController
from gateway.observability.tracing import tracing_installed
from gateway.registry.live import reload_on_sighup, watch_registry_file
from gateway.registry.model import Registry
from gateway.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

__all__ = ["create_admin_app", "create_app"]

_STATIC_CACHE = CacheControlHeader(max_age=3600, public=True)  # the pages' stylesheet and icon
CSRF_KEY_PURPOSE = "catalog pages csrf"  # the pages' CSRF tokens are signed under this derived key


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
    registry_sha256: str | None = None,
    tracer: Tracer | None = None,
) -> Litestar:
    """The gateway serving the services `build_services` makes of ``settings`` and ``registry``.

    ``migrate`` applies the schema on start-up; ``background`` runs the workers (`Services.running`;
    the audit flush always runs); ``clock``, ``transport``, ``delivery_policy`` and ``registry_sha256``
    (the sha-256 of the file ``registry`` was read from) go to `build_services`. With
    ``settings.otel``, every request is a span of ``tracer`` (default: the process provider's).
    """
    services = build_services(
        settings,
        registry,
        clock=clock,
        transport=transport,
        delivery_policy=delivery_policy,
        registry_sha256=registry_sha256,
    )
    live, store = services.registry, services.store
    sessions = WebSessions(live, clock=clock)

    def current_registry() -> Registry:
        """The registry in force when a request asks (never cached: a reload swaps it)."""
        return live.current

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        async with services.running(migrate=migrate, background=background):
            with reload_on_sighup(live, settings.config_path, settings.pid_file):
                async with watch_registry_file(live, settings.config_path, settings.registry_watch_s):
                    yield

    # Each audience's router renders errors in its shape (gateway.http.errors); the app's own handlers
    # answer everything else (routing, health, the pages' fallbacks) in the house's.
    # With an admin port, /metrics is served there only (`create_admin_app`), not to the public.
    public_metrics = [MetricsController] if settings.admin_port is None else []
    app = Litestar(
        route_handlers=[
            HealthController,
            *public_metrics,
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
                    AuditLogController,
                    DeliveriesController,
                    QuotaController,
                    RegistryController,
                ],
                exception_handlers=HOUSE_HANDLERS,
            ),
            catalog_pages(
                csrf_secret=settings.secret_box.derive(CSRF_KEY_PURPOSE)[0],
                secure=settings.public_url.startswith("https://"),
            ),
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
            "intake": _constant(services.intake),
            "messages": _constant(services.messages),
            "tokens": _constant(services.tokens),
            "authorizations": _constant(services.authorizations),
            "vending": _constant(services.vending),
            "proxy": _constant(services.proxy),
            "metrics": _constant(services.metrics),
            "onboarding": _constant(services.onboarding),
            "binding": _constant(services.binding),
            "catalog": _constant(services.catalog),
            "deliveries": _constant(services.deliveries),
            "quota": _constant(services.quota),
            "sessions": _constant(sessions),
            "live_registry": _constant(live),
            "clock": _constant(clock),
            "client": Provide(provide_client, sync_to_thread=False),
        },
        exception_handlers=HOUSE_HANDLERS,
        lifespan=[lifespan],
        openapi_config=openapi_config(),
        logging_config=None,  # the process (CLI, tests) owns logging
        request_max_body_size=MAX_BODY_BYTES,
        before_request=refuse_announced_oversize,
        state=State({"services": services, ACCESS: services.vending}),
        stores={SESSION_STORE: SessionStore(store.web_sessions)},
    )
    # The busiest routes, and the event URL, take one fast lane past Litestar's request pipeline.
    lane = fast_lane(app, fast_routes(services.vending, services.intake, services.proxy))
    if settings.otel:
        if not tracing_installed():
            raise ConfigError("GATEWAY_OTEL is set but OpenTelemetry is not installed: pip install '.[otel]'")
        from gateway.http.traced import traced  # the otel extra: imported only when tracing

        lane = traced(lane, tracer)
    app.asgi_handler = observed(lane, services.metrics, access_log=settings.access_log)
    return app


def create_admin_app(app: Litestar) -> Litestar:
    """``/metrics`` of ``app`` (a `create_app` app) alone, for the admin port: it runs on ``app``'s
    services, which ``app``'s lifespan opens and closes, so both are served in one process."""
    services: Services = app.state["services"]
    live = services.registry

    def current_registry() -> Registry:
        return live.current

    return Litestar(
        route_handlers=[MetricsController],
        dependencies={
            "metrics": _constant(services.metrics),
            "store": _constant(services.store),
            "registry": Provide(current_registry, sync_to_thread=False),
            "clock": _constant(services.clock),
        },
        exception_handlers=HOUSE_HANDLERS,
        openapi_config=None,
        logging_config=None,
    )

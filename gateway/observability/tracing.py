"""OpenTelemetry traces, an optional extra (``pip install 'group-gateway[otel]'``), on with ``GATEWAY_OTEL``.

`configure_tracing` installs the process's tracer provider: spans batched and exported over OTLP/HTTP
where the standard variables say (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_HEADERS``,
``OTEL_SERVICE_NAME``…; the exporter reads them itself). ``gateway.http.traced`` makes a span of every
HTTP request. Without the extra nothing of OpenTelemetry is imported, and asking for it is refused by name.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from gateway import __version__
from gateway.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

__all__ = ["SERVICE_NAME", "configure_tracing", "tracing_installed"]

SERVICE_NAME = "group-gateway"  # unless OTEL_SERVICE_NAME says otherwise
_EXTRA = "GATEWAY_OTEL is set but OpenTelemetry is not installed: pip install 'group-gateway[otel]'"


def tracing_installed() -> bool:
    """Whether the ``otel`` extra (the SDK and the OTLP exporter) is installed."""
    return all(
        importlib.util.find_spec(name) is not None
        for name in ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")
    )


def configure_tracing() -> TracerProvider:
    """Install a tracer provider exporting over OTLP/HTTP as the ``OTEL_*`` variables say, and return it
    (``shutdown()`` it on the way out: it sends what is still batched). ConfigError without the extra."""
    if not tracing_installed():
        raise ConfigError(_EXTRA)
    # Imported here: the extra is optional, and only a process that traces needs it.
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; without a name it says
    # "unknown_service", where ours goes.
    resource = Resource.create({"service.version": __version__})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider

"""Every metric ``/metrics`` exposes follows Prometheus' naming conventions
(https://prometheus.io/docs/practices/naming/): the ``gateway_`` prefix (beside the client library's
standard ``process_`` and ``python_`` families), base units (``_seconds``, never milliseconds or minutes),
``_total`` on counters, ``_info`` gauges of value 1, and no state in a name (a state is a label value).
Also: the build and the process are described."""

from __future__ import annotations

import platform
import re

from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from gateway import __version__

STANDARD = ("process_", "python_")  # prometheus_client's ProcessCollector and PlatformCollector
OTHER_UNITS = re.compile(r"_(ms|millis|milliseconds|us|micros|minutes|hours|days|percent)(_|$)")
# A name ending in one of these would encode a state; `up` is Prometheus' own word for "answers" (`up`).
STATES = {"open", "closed", "half_open", "failed", "ok", "refused", "pending", "delivered", "down", "error"}
# Words of a HELP text that say the metric measures a time or an age.
TIMELY = re.compile(r"\b(time|age|latency|duration)\b", re.IGNORECASE)


async def families(gateway: AsyncTestClient) -> dict[str, tuple[str, str, list[Sample]]]:  # type: ignore[type-arg]
    # Some series first: a request of each outcome, so labelled families show samples too.
    await gateway.get("/healthz")
    await gateway.get("/nowhere")
    text = (await gateway.get("/metrics")).text
    return {f.name: (f.type, f.documentation, f.samples) for f in text_string_to_metric_families(text)}


async def test_metric_names_follow_the_conventions(gateway: AsyncTestClient) -> None:  # type: ignore[type-arg]
    found = await families(gateway)
    # A counter's or histogram's `_created` series, which the text format shows as a gauge of its own.
    created = {f"{name}_created" for name, (kind, _, _) in found.items() if kind in ("counter", "histogram")}
    ours = {n: family for n, family in found.items() if not n.startswith(STANDARD) and n not in created}
    assert len(ours) >= 20
    faults = []
    for name, (kind, help_text, samples) in ours.items():
        if not name.startswith("gateway_"):
            faults.append(f"{name}: no gateway_ prefix")
        if OTHER_UNITS.search(name):
            faults.append(f"{name}: not in base units (seconds)")
        if name.rsplit("_", 1)[-1] in STATES or name.endswith("_half_open"):
            faults.append(f"{name}: a state in the name; make it a label")
        if kind == "counter":
            names = {s.name for s in samples} - {f"{name}_total", f"{name}_created"}
            if names:
                faults.append(f"{name}: counter samples {sorted(names)} do not end in _total")
        if kind in ("histogram", "summary") and not name.endswith(("_seconds", "_bytes")):
            faults.append(f"{name}: a {kind} without its unit")
        if kind == "gauge" and TIMELY.search(help_text) and not name.endswith(("_seconds", "_state")):
            faults.append(f"{name}: measures a time ({help_text!r}) but does not end in _seconds")
        if kind == "gauge" and name.endswith("_info") and any(s.value != 1 for s in samples):
            faults.append(f"{name}: an _info gauge whose value is not 1")
        if kind == "info":
            faults.append(f"{name}: use a gauge named _info")
    assert faults == []


async def test_the_build_and_the_process_are_described(gateway: AsyncTestClient) -> None:  # type: ignore[type-arg]
    found = await families(gateway)
    (build,) = found["gateway_build_info"][2]
    assert build.labels == {"version": __version__, "python": platform.python_version()}
    assert build.value == 1
    assert "process_cpu_seconds" in found
    assert "process_resident_memory_bytes" in found
    assert "python_info" in found
    (registry,) = found["gateway_registry_info"][2]
    assert registry.labels == {"sha256": "unknown"}  # this app's registry was not read from a file
    assert found["gateway_registry_last_reload_timestamp_seconds"][2][0].value > 1.7e9

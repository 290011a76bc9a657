"""A real ``gateway serve`` over sockets: with ``--admin-port``, ``/metrics`` answers there and not on the
public port; with ``GATEWAY_REGISTRY_WATCH_S``, an edit of the registry file is in force (its sha-256 in
``/metrics``) without a signal, and the access log has a line per request."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx

from tests.test_e2e import EXAMPLE, Process, environment, free_port, processes, wait_for

__all__ = ["environment", "processes"]  # the fixtures, shared with test_e2e


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_metrics_on_the_admin_port_only_and_the_file_watched(
    tmp_path: Path, environment: dict[str, str], processes: list[Process]
) -> None:
    port, admin_port = free_port(), free_port()
    public, admin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
    registry = tmp_path / "registry.yaml"
    registry.write_text(EXAMPLE.read_text())
    environment["GATEWAY_REGISTRY_WATCH_S"] = "0.2"
    environment["GATEWAY_ACCESS_LOG"] = "all"  # the answered requests logged too
    gateway = Process(
        ["serve", "--config", str(registry), "--port", str(port), "--admin-port", str(admin_port)],
        environment,
        tmp_path / "gateway.log",
    )
    processes.append(gateway)
    wait_for(lambda: httpx.get(f"{public}/healthz", timeout=5).status_code == 200, what="gateway up")

    assert httpx.get(f"{public}/metrics", timeout=5).status_code == 404
    scraped = httpx.get(f"{admin}/metrics", timeout=5)
    assert scraped.status_code == 200
    assert f'gateway_registry_info{{sha256="{sha256(registry)}"}} 1.0' in scraped.text
    assert "gateway_build_info{" in scraped.text
    assert "process_resident_memory_bytes" in scraped.text
    assert httpx.get(f"{admin}/healthz", timeout=5).status_code == 404  # the admin port serves metrics only

    registry.write_text(registry.read_text().replace("name: ", "name:  ", 1))  # same registry, new bytes
    edited = sha256(registry)
    wait_for(
        lambda: (
            f'gateway_registry_info{{sha256="{edited}"}} 1.0' in httpx.get(f"{admin}/metrics", timeout=5).text
        ),
        what="the watch to reload the edited file",
    )
    assert 'gateway_registry_reloads_total{outcome="ok"} 1.0' in httpx.get(f"{admin}/metrics", timeout=5).text

    assert gateway.stop() == 0, gateway.output()
    lines = [json.loads(line) for line in gateway.output().splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "gateway.access"]
    assert {(line["route"], line["status"]) for line in access} >= {("/healthz", 200), ("unmatched", 404)}
    assert any("registry reloaded" in line["event"] for line in lines)

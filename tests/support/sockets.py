"""The simulator and a gateway on real loopback sockets, wired to each other, tickets pushed.

For tests whose clients need URLs (wechatpy, a browser, ``gateway`` CLI processes): ``env`` is the
environment the gateway was built from, so a CLI process started with it shares its database, key
and registry.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import msgspec

from gateway.http.app import create_app
from gateway.registry.model import parse_registry
from gateway.settings import Settings
from gateway.simulator import SimComponent, SimulatorConfig, create_simulator_app
from tests.conftest import PLATFORM_SECRETS, REGISTRY_YAML, registry_environ
from tests.support.servers import serve_in_thread

__all__ = ["Served", "served"]


class Served(msgspec.Struct, frozen=True):
    """Where the two listen, and the gateway's environment."""

    gateway: str
    simulator: str
    env: dict[str, str]


@contextmanager
def served(tmp_path: Path) -> Iterator[Served]:
    """Both apps on free ports; every test platform has a component in the simulator and a ticket."""
    simulator = create_simulator_app(
        SimulatorConfig(
            components=[
                SimComponent(v["appid"], v["secret"], v["token"], v["aes_key"])
                for v in PLATFORM_SECRETS.values()
            ],
            push_on_start=False,
            ticket_interval_s=0,
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")} | registry_environ()
    env |= {
        "GATEWAY_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
        "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
    }
    with serve_in_thread(simulator) as sim:
        config = tmp_path / "registry.yaml"
        config.write_text(REGISTRY_YAML.replace("http://wechat.test", sim))
        env["GATEWAY_CONFIG"] = str(config)
        registry = parse_registry(config.read_text(), source=str(config), environ=env)
        with serve_in_thread(create_app(Settings.from_environ(env), registry)) as gateway:
            for platform, v in PLATFORM_SECRETS.items():
                component = {
                    "appid": v["appid"],
                    "secret": v["secret"],
                    "token": v["token"],
                    "encoding_aes_key": v["aes_key"],
                    "event_url": f"{gateway}/wechat/{platform}/events",
                }
                httpx.post(f"{sim}/sim/components", json=component).raise_for_status()
                pushed = httpx.post(f"{sim}/sim/components/{v['appid']}/push-ticket").json()
                assert pushed["body"] == "success", pushed
            yield Served(gateway, sim, env)

"""``gateway simulate``: the WeChat simulator on its own, pushing tickets to a gateway."""

from __future__ import annotations

import argparse
from urllib.parse import urlsplit

from gateway.cli.shared import Commands, in_event_loop
from gateway.http.serving import Listener, serve
from gateway.registry.model import load_registry
from gateway.settings import Settings
from gateway.simulator import SimComponent, SimulatorConfig, create_simulator_app

__all__ = ["add_commands"]


def add_commands(commands: Commands) -> None:
    """``simulate``."""
    simulate = commands.add_parser("simulate", help="run the WeChat simulator on its own")
    simulate.add_argument("--config", help="push tickets to the platforms of this registry")
    simulate.add_argument("--gateway-url", default="http://127.0.0.1:8000", help="where the gateway listens")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=8001)
    simulate.add_argument(
        "--ticket-interval", type=float, default=600.0, help="seconds between ticket pushes"
    )
    simulate.set_defaults(run=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    components = []
    if args.config:
        registry = load_registry(args.config)
        gateway_url = args.gateway_url.rstrip("/")
        components = [
            SimComponent(
                appid=p.component_appid,
                secret=p.component_appsecret.reveal(),
                token=p.token.reveal(),
                encoding_aes_key=p.encoding_aes_key.reveal(),
                event_url=f"{gateway_url}/wechat/{p.id}/events",
                message_url=f"{gateway_url}/wechat/{p.id}/messages/$APPID$",
                auth_domain=urlsplit(gateway_url).netloc,  # 授权发起页域名: where the start page is
            )
            for p in registry.platforms
        ]
    app = create_simulator_app(SimulatorConfig(components=components, ticket_interval_s=args.ticket_interval))
    print(f"WeChat simulator on http://{args.host}:{args.port} (control API under /sim)", flush=True)
    http = Settings.from_environ().http_parser
    in_event_loop(lambda: serve([Listener(app, args.host, args.port)], http=http))
    return 0

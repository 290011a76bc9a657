"""``gateway demo``: the simulator and the gateway side by side on loopback, ready to explore."""

from __future__ import annotations

import argparse
import base64
import os
import re
import secrets
import string
import tempfile
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec

from gateway.cli.shared import Commands, in_event_loop
from gateway.container import Services
from gateway.http.app import create_app
from gateway.http.serving import Listener, serve
from gateway.onboarding.service import LinkRequest
from gateway.registry.model import Registry, WechatSettings, load_registry
from gateway.settings import Settings
from gateway.simulator import SimComponent, SimulatorConfig, create_simulator_app

__all__ = [
    "DEMO_AUTHORIZERS",
    "DEMO_OPEN_ACCOUNTS",
    "DemoAccount",
    "add_commands",
    "demo_environment",
    "run_demo",
]

# The demo's registry ships inside the package, since an installed wheel has no config/ folder; it is
# config/registry.example.yaml, byte for byte (tests/test_deploy.py holds the two equal).
DEMO_CONFIG = resources.files("gateway.registry").joinpath("example.yaml")

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ALNUM = string.ascii_letters + string.digits


class DemoAccount(msgspec.Struct, frozen=True):
    """A demo account and the permission sets it grants each platform (by platform id)."""

    authorizer_appid: str
    kind: str
    nick_name: str
    principal_name: str
    grants: dict[str, list[int]]


DEMO_AUTHORIZERS = (
    DemoAccount(
        "wxa0000000000001",
        "official_account",
        "ACME Retail",
        "ACME Group Co., Ltd.",
        {"retail": [1, 2, 3, 4, 7, 11, 15, 24], "services": [1, 2, 6]},
    ),
    DemoAccount(
        "wxb0000000000002",
        "official_account",
        "ACME Finance",
        "ACME Finance Co., Ltd.",
        {"finance": [1, 2, 3, 7, 15, 24], "retail": [1, 2]},
    ),
    DemoAccount(
        "wxc0000000000003",
        "mini_program",
        "ACME Shop",
        "ACME Group Co., Ltd.",
        {"retail": [17, 18, 19, 25, 30]},
    ),
    # Outside the group's principals: only the Open Platform console can bind it.
    DemoAccount(
        "wxd0000000000004",
        "official_account",
        "Partner Mall",
        "Partner Trading Co., Ltd.",
        {"retail": [1, 2, 3, 24]},
    ),
    # The group's principal, but bound to another open account: an audit finding.
    DemoAccount(
        "wxe0000000000005",
        "official_account",
        "ACME Coupons",
        "ACME Group Co., Ltd.",
        {"retail": [1, 2, 24]},
    ),
    # No component may ask where it is bound.
    DemoAccount(
        "wxf0000000000006",
        "official_account",
        "ACME Events",
        "ACME Group Co., Ltd.",
        {"services": [1, 2]},
    ),
)
# Open accounts as WeChat holds them before the demo starts (the first two are the registry's).
DEMO_OPEN_ACCOUNTS: tuple[tuple[str, str, list[str]], ...] = (
    ("wx0pen0000000001", "ACME Group Co., Ltd.", ["wxa0000000000001"]),
    ("wx0pen0000000002", "ACME Finance Co., Ltd.", []),
    ("wx0pen0000000099", "ACME Group Co., Ltd.", ["wxe0000000000005"]),
)


def add_commands(commands: Commands) -> None:
    """``demo``."""
    demo = commands.add_parser("demo", help="run the gateway beside the WeChat simulator, with demo data")
    demo.add_argument(
        "--config", type=Path, help="the registry (default: config/registry.example.yaml, as packaged)"
    )
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--simulator-port", type=int, default=8001)
    demo.set_defaults(run=_demo)


def _demo(args: argparse.Namespace) -> int:
    with resources.as_file(DEMO_CONFIG) as example:
        config: Path = args.config or example
        in_event_loop(lambda: run_demo(config, args.host, args.port, args.simulator_port))
    return 0


def demo_environment(config_path: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """Values for every ``${VAR}`` of the registry that the environment leaves unset.

    An AES key gets 43 letters and digits, anything else 32; a fresh ``GATEWAY_SECRET_KEY`` too.
    """
    generated: dict[str, str] = {}
    for name in _VARIABLE.findall(config_path.read_text(encoding="utf-8")):
        if name not in environ and name not in generated:
            length = 43 if name.endswith("AES_KEY") else 32
            generated[name] = "".join(secrets.choice(_ALNUM) for _ in range(length))
    if not environ.get("GATEWAY_SECRET_KEY"):
        generated["GATEWAY_SECRET_KEY"] = base64.b64encode(os.urandom(32)).decode()
    return generated


async def run_demo(config_path: Path, host: str, port: int, simulator_port: int) -> None:
    """Start both apps, push every component a ticket, seed authorizers, print what to try."""
    workdir = Path(tempfile.mkdtemp(prefix="gateway-demo-"))
    environ = dict(os.environ)
    environ.update(demo_environment(config_path, environ))
    environ.setdefault("GATEWAY_DATABASE_URL", f"sqlite+aiosqlite:///{workdir / 'gateway.db'}")
    environ.setdefault("GATEWAY_PUBLIC_URL", f"http://{host}:{port}")
    # The demo serves the gateway on one port, /metrics included, whatever GATEWAY_ADMIN_PORT says.
    settings = msgspec.structs.replace(
        Settings.from_environ(environ, config_path=str(config_path)), admin_port=None
    )
    registry = load_registry(config_path, environ)
    simulator_url = f"http://{host}:{simulator_port}"
    # The demo's WeChat is its own simulator, whatever port it was given: its API and the authorization
    # pages administrators' browsers open.
    registry = msgspec.structs.replace(
        registry, wechat=WechatSettings(api_base=simulator_url, authorization_page_base=simulator_url)
    )

    simulator = create_simulator_app(
        SimulatorConfig(
            components=[
                SimComponent(
                    appid=p.component_appid,
                    secret=p.component_appsecret.reveal(),
                    token=p.token.reveal(),
                    encoding_aes_key=p.encoding_aes_key.reveal(),
                    event_url=f"{settings.public_url}/wechat/{p.id}/events",
                    auth_domain=urlsplit(settings.public_url).netloc,  # 授权发起页域名: the start page's host
                )
                for p in registry.platforms
            ],
            push_on_start=False,  # the gateway may not listen yet; `prepare` pushes once both do
        )
    )

    async def prepare() -> None:
        async with httpx.AsyncClient(base_url=simulator_url, timeout=10) as client:
            for platform in registry.platforms:
                response = await client.post(f"/sim/components/{platform.component_appid}/push-ticket")
                response.raise_for_status()
            await _authorize_demo_accounts(client, registry)
            for open_appid, principal, members in DEMO_OPEN_ACCOUNTS:
                seeded = {"open_appid": open_appid, "principal_name": principal, "verified": True}
                response = await client.post("/sim/open-accounts", json=seeded | {"members": members})
                response.raise_for_status()
        # The catalog shows every binding state at once instead of after the first scheduled sync.
        services: Services = app.state.services
        await services.catalog_sync.run()
        invite = services.onboarding.create_invite("demo", registry.platforms[0].id, LinkRequest())
        _print_welcome(settings.public_url, simulator_url, registry, workdir, invite.url)

    app = create_app(settings, registry)
    await serve(
        [
            Listener(app, host, port),
            Listener(simulator, host, simulator_port),
        ],
        on_started=prepare,
        http=settings.http_parser,
    )


async def _authorize_demo_accounts(client: httpx.AsyncClient, registry: Registry) -> None:
    """Each demo account authorizes its platforms as an administrator would: the simulator approves a
    pre-auth code and pushes ``authorized`` to the gateway, which exchanges the code."""
    for account in DEMO_AUTHORIZERS:
        for platform_id, func_ids in account.grants.items():
            platform = registry.platform(platform_id)
            if platform is None:
                continue
            component = (await client.get(f"/sim/components/{platform.component_appid}")).json()
            token = await _wechat(
                client,
                "api_component_token",
                None,
                {
                    "component_appid": platform.component_appid,
                    "component_appsecret": platform.component_appsecret.reveal(),
                    "component_verify_ticket": component["latest_ticket"],
                },
            )
            pre_auth = await _wechat(
                client,
                "api_create_preauthcode",
                token["component_access_token"],
                {"component_appid": platform.component_appid},
            )
            response = await client.post(
                f"/sim/pre-auth-codes/{pre_auth['pre_auth_code']}/approve",
                json={
                    "authorizer_appid": account.authorizer_appid,
                    "func_ids": func_ids,
                    "kind": account.kind,
                    "nick_name": account.nick_name,
                    "principal_name": account.principal_name,
                },
            )
            response.raise_for_status()


async def _wechat(
    client: httpx.AsyncClient, api: str, component_token: str | None, body: dict[str, object]
) -> dict[str, Any]:
    params = {"component_access_token": component_token} if component_token else None
    response = await client.post(f"/cgi-bin/component/{api}", params=params, json=body)
    answer: dict[str, Any] = response.json()
    if answer.get("errcode", 0):
        raise RuntimeError(f"the simulator refused {api}: {answer}")
    return answer


def _print_welcome(
    public_url: str, simulator_url: str, registry: Registry, workdir: Path, invite_url: str
) -> None:
    platforms = ", ".join(p.id for p in registry.platforms)
    print(
        f"""
Group Gateway demo is running (Ctrl-C stops both).

  gateway            {public_url}
    readiness        {public_url}/readyz          every platform should show a fresh ticket
    API schema       {public_url}/schema
    auditors' page   {public_url}/catalog           sign in with demo-audit-key
  WeChat simulator   {simulator_url}
    its state        {simulator_url}/sim/state     components, authorizers, bindings
    pushes sent      {simulator_url}/sim/pushes    each ticket push and the gateway's answer
    call counters    {simulator_url}/sim/counters  calls per WeChat API

  platforms          {platforms}
  demo client keys   demo-crm-key, demo-payments-key, demo-onboarding-key, demo-audit-key, demo-ops-key
  state              {workdir} (fresh each run)

Onboard an account as its administrator would: open this invite in a browser, follow the link to
WeChat's authorization page (the simulator's), pick an account, approve, and land back on the gateway:
  {invite_url}

Try:
  curl -s {public_url}/readyz
  curl -s -H 'Authorization: Bearer demo-crm-key' {public_url}/v1/authorizers/wxa0000000000001/access-token
  curl -s -H 'Authorization: Bearer demo-crm-key' {public_url}/v1/authorizers/wxc0000000000003/jsapi-ticket
  curl -s -H 'Authorization: Bearer demo-audit-key' {public_url}/v1/authorizers/wxa0000000000001/access-token
  curl -s -X POST {simulator_url}/sim/components/{registry.platforms[0].component_appid}/push-ticket
  curl -s {simulator_url}/sim/pushes
  gateway open-binding ensure --dry-run   (with the demo's GATEWAY_* settings: the plan per account)
  {public_url}/catalog?binding=console_binding_needed   accounts only the Open Platform console can bind
""",
        flush=True,
    )

"""What `gateway serve` refuses to start on outside the demo: the example registry's public client keys, a
database or public URL left to its default, a public URL in plain http that others reach. Each refusal
names the setting and how to run past it (docs/operations.md, "Safe defaults")."""

from __future__ import annotations

import hashlib
import ipaddress
from urllib.parse import urlsplit

from gateway.registry.model import Registry
from gateway.settings import DEFAULT_DATABASE_URL, DEFAULT_PUBLIC_URL, Settings

__all__ = ["EXAMPLE_CLIENT_KEYS", "example_key_clients", "is_loopback_url", "unsafe_settings"]

# The public demo keys whose digests config/registry.example.yaml holds (tests keep the two in step):
# anyone can present them.
EXAMPLE_CLIENT_KEYS = (
    "demo-crm-key",
    "demo-payments-key",
    "demo-onboarding-key",
    "demo-audit-key",
    "demo-ops-key",
)
_EXAMPLE_DIGESTS = frozenset(hashlib.sha256(key.encode()).hexdigest() for key in EXAMPLE_CLIENT_KEYS)


def example_key_clients(registry: Registry) -> list[str]:
    """Ids of the registry's clients whose key is a public demo key, in registry order."""
    return [client.id for client in registry.clients if client.key_sha256.lower() in _EXAMPLE_DIGESTS]


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` names this machine only (localhost, 127.0.0.0/8, ::1)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def unsafe_settings(settings: Settings, registry: Registry) -> list[str]:
    """One message per refusal, each naming its setting and how to run past it; empty when `serve` may
    start."""
    refusals = []
    allowed = settings.allow_unsafe
    demo_clients = example_key_clients(registry)
    if demo_clients and "example-keys" not in allowed:
        refusals.append(
            f"{settings.config_path}: client{'s' if len(demo_clients) > 1 else ''} "
            f"{', '.join(demo_clients)} {'have' if len(demo_clients) > 1 else 'has'} a public demo key of "
            "config/registry.example.yaml, which anyone can present: give each a key_sha256 from "
            "`gateway new-client-key`, or run past this with --allow-unsafe example-keys "
            "(GATEWAY_ALLOW_UNSAFE=example-keys)"
        )
    if "GATEWAY_DATABASE_URL" in settings.defaulted:
        refusals.append(
            "GATEWAY_DATABASE_URL is not set: the state would go to ./gateway.db, beside wherever serve was "
            "started; set it (postgresql+asyncpg://… for several replicas, or a SQLite file written out, "
            f"even the default {DEFAULT_DATABASE_URL})"
        )
    if "GATEWAY_PUBLIC_URL" in settings.defaulted:
        refusals.append(
            f"GATEWAY_PUBLIC_URL is not set: WeChat and browsers would be sent to {DEFAULT_PUBLIC_URL}, "
            "which only this machine reaches, and the pages' session cookie would not be Secure; set it to "
            f"the gateway's public https:// address (or, to try it on this machine, {DEFAULT_PUBLIC_URL} "
            "written out)"
        )
    elif (
        settings.public_url.startswith("http://")
        and not is_loopback_url(settings.public_url)
        and "http-public-url" not in allowed
    ):
        refusals.append(
            "GATEWAY_PUBLIC_URL is plain http on a host other machines reach: the pages' session cookie "
            "would not be Secure and client keys typed into the login form would cross the network in "
            "clear; give its https:// address, or run past this with --allow-unsafe http-public-url "
            "(GATEWAY_ALLOW_UNSAFE=http-public-url)"
        )
    return refusals

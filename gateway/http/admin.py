"""The registry reloaded on an administrator's word (scope ``admin``): ``POST /v1/admin/registry/reload``.

It reloads the replica that answers, from that replica's own file, as SIGHUP does. Every replica reads its
own copy of the file, so a fleet follows an edit with ``GATEWAY_REGISTRY_WATCH_S`` (each replica notices
the change in its copy); this route is for one instance, or to learn at once whether an edit is refused.
"""

from __future__ import annotations

import msgspec
from litestar import Controller, post
from litestar.di import NamedDependency

from gateway.errors import RegistryRefused
from gateway.http.guards import CLIENT_KEY, Requires
from gateway.http.openapi import V1_ERRORS
from gateway.registry.live import LiveRegistry
from gateway.registry.model import Client
from gateway.settings import Settings

__all__ = ["RegistryController", "RegistryReloaded"]


class RegistryReloaded(msgspec.Struct, frozen=True):
    """The registry now in force on the replica that answered: its file's sha-256 and what changed."""

    sha256: str | None
    changes: str


class RegistryController(Controller):
    """The registry of this replica."""

    path = "/v1/admin/registry"
    tags = ["admin"]
    guards = [Requires("admin")]
    security = CLIENT_KEY

    @post("/reload", status_code=200, summary="Reload the registry file", responses=V1_ERRORS)
    async def reload(
        self,
        client: NamedDependency[Client],
        settings: NamedDependency[Settings],
        live_registry: NamedDependency[LiveRegistry],
    ) -> RegistryReloaded:
        """Read and validate this replica's registry file and put it in force; a file that does not
        validate is refused (409 ``registry_refused``, naming the fault) and the running registry stays.
        Audited either way."""
        outcome = live_registry.reload_outcome(settings.config_path, source="endpoint", actor=client.id)
        if not outcome.ok:
            raise RegistryRefused(outcome.detail, outcome.sha256)
        return RegistryReloaded(outcome.sha256, outcome.detail)

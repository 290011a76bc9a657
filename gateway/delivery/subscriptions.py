"""The subscriptions in force: which clients receive which messages, as the registry in force says."""

from __future__ import annotations

from gateway.registry.live import LiveRegistry
from gateway.registry.model import Subscription

__all__ = ["Subscriptions"]


class Subscriptions:
    """The ``subscriptions`` of the registry in force; a reload (``SIGHUP``) replaces them whole."""

    def __init__(self, registry: LiveRegistry) -> None:
        self._live = registry

    @property
    def current(self) -> tuple[Subscription, ...]:
        """Every subscription, in registry order."""
        return self._live.current.subscriptions

    def matching(self, authorizer_appid: str, msg_type: str, event: str) -> list[Subscription]:
        """The subscriptions a message of ``msg_type`` (``event``) to ``authorizer_appid`` goes to."""
        return [s for s in self.current if s.matches(authorizer_appid, msg_type, event)]

    def find(self, client_id: str, url: str) -> Subscription | None:
        """The subscription of ``client_id`` to ``url``, if it is still in force."""
        return next((s for s in self.current if s.client == client_id and s.url == url), None)

"""The subscriptions in force: which clients receive which messages, swapped whole on a reload."""

from __future__ import annotations

import logging
from pathlib import Path

from gateway.errors import RegistryError
from gateway.registry import Subscription, load_registry

__all__ = ["Subscriptions"]

log = logging.getLogger(__name__)


class Subscriptions:
    """The registry's ``subscriptions``, replaced atomically by :meth:`reload` (``SIGHUP``)."""

    def __init__(self, subscriptions: tuple[Subscription, ...]) -> None:
        self._current = subscriptions

    @property
    def current(self) -> tuple[Subscription, ...]:
        """Every subscription, in registry order."""
        return self._current

    def matching(self, authorizer_appid: str, msg_type: str, event: str) -> list[Subscription]:
        """The subscriptions a message of ``msg_type`` (``event``) to ``authorizer_appid`` goes to."""
        return [s for s in self._current if s.matches(authorizer_appid, msg_type, event)]

    def find(self, client_id: str, url: str) -> Subscription | None:
        """The subscription of ``client_id`` to ``url``, if it is still in force."""
        return next((s for s in self._current if s.client == client_id and s.url == url), None)

    def reload(self, path: str | Path) -> bool:
        """Read the registry at ``path`` and take its subscriptions; a registry that does not validate
        is refused whole (logged with the same message as at start-up) and the current ones stay."""
        try:
            registry = load_registry(path)
        except RegistryError as exc:
            log.error("registry reload refused, subscriptions unchanged: %s", exc)
            return False
        self._current = registry.subscriptions
        log.info("registry reloaded: %d subscription(s) in force", len(self._current))
        return True

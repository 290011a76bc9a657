"""Retention of what WeChat sent: component pushes, user messages and their deliveries.

Each is kept while something still needs it (an authorization event not yet acted on, a delivery still
pending) and for ``GATEWAY_EVENT_RETENTION_DAYS`` after it arrived; then it is deleted, at start-up and
every hour, by every replica (a delete finds nothing another already took). The audit log has its own
retention (`gateway.audit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from gateway.store import Store

__all__ = ["PURGE_EVERY_S", "EventRetention"]

log = logging.getLogger(__name__)

PURGE_EVERY_S = 3600.0


class EventRetention:
    """Deletes pushes, messages and deliveries older than ``retention_s`` that nothing waits on."""

    def __init__(self, store: Store, retention_s: float, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._retention_s = retention_s
        self._clock = clock

    async def purge(self) -> tuple[int, int]:
        """One pass: how many pushes and how many messages (with their deliveries) went."""
        older_than = self._clock() - self._retention_s
        pushes = await self._store.purge_pushes(older_than)
        messages = await self._store.deliveries.purge(older_than)
        if pushes or messages:
            days = self._retention_s / 86400
            log.info(
                "event retention: %d pushes and %d messages older than %.0f days deleted",
                pushes,
                messages,
                days,
            )
        return pushes, messages

    async def run(self, stop: asyncio.Event, every_s: float = PURGE_EVERY_S) -> None:
        """A pass now and then every ``every_s`` until ``stop``; a failed pass is logged and tried again."""
        while not stop.is_set():
            try:
                await self.purge()
            except Exception:  # the database may be restarting: the next pass tries again
                log.exception("event retention: deleting old pushes and messages failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=every_s)

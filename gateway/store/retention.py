"""Retention of what WeChat sent: component pushes, user messages and their deliveries, authorization codes.

Each is kept while something still needs it (an authorization event not yet acted on, a delivery still
pending) and for ``GATEWAY_EVENT_RETENTION_DAYS`` after it arrived; then it is deleted, at start-up and
every hour, by every replica (a delete finds nothing another already took). Authorization codes that were
refused, lost or abandoned go a day after they arrived: WeChat's codes live an hour at most (protocol
§3-4), and anyone can send codes to the redirect page. Exchanged codes stay for the event retention (at
least that day): they answer a replayed redirect or push as already done. The audit log has its own
retention (`gateway.store.audit_trail`).
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
CODE_RETENTION_S = 86400.0  # a code's row outlives the code (600 s, at most 3600 s) by far


class EventRetention:
    """Deletes pushes, messages and deliveries older than ``retention_s`` that nothing waits on, and
    authorization codes no arrival needs (`CODE_RETENTION_S`)."""

    def __init__(self, store: Store, retention_s: float, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._retention_s = retention_s
        self._clock = clock

    async def purge(self) -> tuple[int, int]:
        """One pass: how many pushes and how many messages (with their deliveries) went (and codes).
        A ``retention_s`` of 0 keeps pushes, messages and exchanged codes forever."""
        now = self._clock()
        settled_before = now - CODE_RETENTION_S
        if not self._retention_s:
            codes = await self._store.authorizations.purge_codes(settled_before, exchanged_before=0.0)
            self._log_codes(codes)
            return 0, 0
        older_than = now - self._retention_s
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
        codes = await self._store.authorizations.purge_codes(settled_before, min(older_than, settled_before))
        self._log_codes(codes)
        return pushes, messages

    @staticmethod
    def _log_codes(codes: int) -> None:
        if codes:
            log.info("event retention: %d authorization codes no longer needed deleted", codes)

    async def run(self, stop: asyncio.Event, every_s: float = PURGE_EVERY_S) -> None:
        """A pass now and then every ``every_s`` until ``stop``; a failed pass is logged and tried again."""
        while not stop.is_set():
            try:
                await self.purge()
            except Exception:  # the database may be restarting: the next pass tries again
                log.exception("event retention: deleting old pushes and messages failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=every_s)

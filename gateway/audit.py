"""The audit trail: records are queued in memory and written in batches, off the request path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from gateway.store.audit import AuditLog, AuditRecord

__all__ = ["AuditTrail"]

log = logging.getLogger(__name__)

FLUSH_BATCH = 256


class AuditTrail:
    """Collects audit records and flushes them every ``interval_s`` (and on shutdown).

    A hard crash loses at most the last interval's records; a clean stop loses none.
    """

    def __init__(self, audit_log: AuditLog, *, clock: Callable[[], float] = time.time) -> None:
        self._log = audit_log
        self._clock = clock
        self._pending: list[AuditRecord] = []

    def record(
        self,
        actor: str,
        action: str,
        *,
        platform_id: str | None = None,
        authorizer_appid: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Queue one record (never a secret: name what happened, not the token)."""
        self._pending.append(AuditRecord(self._clock(), actor, action, platform_id, authorizer_appid, detail))

    async def flush(self) -> None:
        """Write what is queued, a bounded batch at a time so no write stalls the event loop for long;
        on failure the unwritten records stay queued for the next try."""
        while self._pending:
            # Taken out before the await: a flush running beside this one must not write it again.
            batch = self._pending[:FLUSH_BATCH]
            del self._pending[: len(batch)]
            try:
                await self._log.append(batch)
            except BaseException:
                self._pending[:0] = batch
                raise

    async def run(self, stop: asyncio.Event, interval_s: float = 0.5) -> None:
        """Flush periodically until ``stop``, then once more."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
            try:
                await self.flush()
            except Exception:  # the database may be restarting; keep the records and try again
                log.exception("audit flush failed; %d records kept for the next try", len(self._pending))

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
PURGE_EVERY_S = 3600.0


class AuditTrail:
    """Collects audit records and flushes them every ``interval_s`` (and on shutdown).

    A hard crash loses at most the last interval's records; a clean stop loses none.
    """

    def __init__(self, audit_log: AuditLog, *, clock: Callable[[], float] = time.time) -> None:
        self._log = audit_log
        self._clock = clock
        self._pending: list[AuditRecord] = []
        # One flush at a time: a flush that returns has seen every record queued before it written, even
        # those the periodic flush had already taken out.
        self._flushing = asyncio.Lock()

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
        async with self._flushing:
            while self._pending:
                batch = self._pending[:FLUSH_BATCH]
                del self._pending[: len(batch)]
                try:
                    await self._log.append(batch)
                except BaseException:
                    self._pending[:0] = batch
                    raise

    async def purge(self, retention_s: float) -> int:
        """Delete the records older than ``retention_s``; how many went."""
        removed = await self._log.purge(self._clock() - retention_s)
        if removed:
            log.info("audit retention: %d records older than %.0f days deleted", removed, retention_s / 86400)
        return removed

    async def run(
        self,
        stop: asyncio.Event,
        interval_s: float = 0.5,
        *,
        retention_s: float | None = None,
        purge_every_s: float = PURGE_EVERY_S,
    ) -> None:
        """Flush periodically until ``stop``, then once more; with ``retention_s``, also delete older
        records, once at start and then every ``purge_every_s`` (every replica does: a delete finds
        nothing another already deleted)."""
        purged_at: float | None = None
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
            try:
                await self.flush()
            except Exception:  # the database may be restarting; keep the records and try again
                log.exception("audit flush failed; %d records kept for the next try", len(self._pending))
            now = self._clock()
            if retention_s and not stop.is_set() and (purged_at is None or now - purged_at >= purge_every_s):
                purged_at = now
                try:
                    await self.purge(retention_s)
                except Exception:  # as above: the next round tries again
                    log.exception("audit retention: deleting old records failed")

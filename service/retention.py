"""The retention sweep: finished jobs, their events and old Idempotency-Keys are pruned.

It deletes in small transactions through the store's writer, so submits and state changes keep
flowing between them however large the backlog of expired jobs is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from .db import Store

log = logging.getLogger("conveyor.retention")

PRUNE_CHUNK = 200  # jobs per transaction: a few milliseconds of the writer's time
LONGEST_REST_S = 0.1  # between two chunks: the sweep takes at most about half the writer
LONGEST_PAUSE_S = 60.0


class RetentionSweep:
    """Prunes what is older than its retention, now and then, while the service runs."""

    def __init__(
        self,
        db: Store,
        *,
        retention_s: float,
        idempotency_ttl_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._retention_s = retention_s  # 0: finished jobs are kept for good
        self._idempotency_ttl_s = idempotency_ttl_s
        self._clock = clock
        # often enough that nothing outlives its retention by more than a tenth of it
        self.pause_s = min(LONGEST_PAUSE_S, max(1.0, retention_s / 10))
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RetentionSweep:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def sweep(self) -> int:
        """Prune once; return how many jobs went."""
        now = self._clock()
        await self._db.prune_idempotency(now - self._idempotency_ttl_s)
        if not self._retention_s:
            return 0
        pruned = 0
        while True:
            started = time.perf_counter()
            count = await self._db.prune(now - self._retention_s, PRUNE_CHUNK)
            pruned += count
            if count < PRUNE_CHUNK:
                return pruned
            # a rest as long as the chunk took: the writer's next transaction is the submits
            # that came meanwhile, alone, not those and the next chunk together
            await asyncio.sleep(min(time.perf_counter() - started, LONGEST_REST_S))

    async def _run(self) -> None:
        while True:
            try:
                pruned = await self.sweep()
                if pruned:
                    log.info("pruned %d finished job(s) past their retention", pruned)
            except Exception:  # a failed sweep is tried again; it must not stop the service
                log.exception("the retention sweep failed")
            await asyncio.sleep(self.pause_s)

"""Scheduled jobs, held by the time they become due."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable

MAX_WAIT_S = 1.0


class DueQueue:
    """Job ids with the epoch second each becomes due; ``due()`` waits for the next ones.

    An id may be added again (a newer time wins in practice: the owner re-checks the stored
    job when it comes due, so a stale or canceled entry does nothing).
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._heap: list[tuple[float, str]] = []
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, due_at: float, job_id: str) -> None:
        heapq.heappush(self._heap, (due_at, job_id))
        if self._heap[0][1] == job_id:  # due before the one waited for: wait again, less
            self._changed.set()

    async def due(self) -> list[str]:
        """Wait until at least one job is due; return every due one, earliest first."""
        while True:
            self._changed.clear()
            if self._heap:
                wait_s = self._heap[0][0] - self._clock()
                if wait_s <= 0:
                    return self._pop_due()
                try:
                    # look at the wall clock again at least every second: it can jump (NTP,
                    # a suspended machine) where the loop's monotonic clock does not
                    async with asyncio.timeout(min(wait_s, MAX_WAIT_S)):
                        await self._changed.wait()
                except TimeoutError:
                    pass
            else:
                await self._changed.wait()

    def _pop_due(self) -> list[str]:
        now = self._clock()
        ids = []
        while self._heap and self._heap[0][0] <= now:
            ids.append(heapq.heappop(self._heap)[1])
        return ids

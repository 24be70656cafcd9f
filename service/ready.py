"""The jobs that are due, in the order they should start, within their concurrency limits.

Each (queue, task) pair has its own heap ordered by priority (higher first) then arrival (FIFO).
The next job is the best head among the pairs whose queue and task are both under their limits,
so a queue at its limit never holds back another queue's jobs while a worker is free. The pairs
are few (queues by tasks): choosing is a short scan and one heap pop, whatever the backlog.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

_Key = tuple[str, str]  # (queue, task)


@dataclass(frozen=True, slots=True)
class Entry:
    """A job taken from the ready queue; it counts against its limits until released."""

    job_id: str
    queue: str
    task: str


class ReadyQueue:
    def __init__(
        self, queue_limits: Mapping[str, int], task_limits: Mapping[str, int | None]
    ) -> None:
        self._queue_limits = dict(queue_limits)  # a queue not named here has no limit of its own
        self._task_limits = {name: limit for name, limit in task_limits.items() if limit}
        # heap items: (-priority, arrival, job_id); tuples keep 100,000 of them small
        self._heaps: dict[_Key, list[tuple[int, int, str]]] = {}
        self._arrivals = itertools.count()
        self._running_by_queue: Counter[str] = Counter()
        self._running_by_task: Counter[str] = Counter()
        self._waiting: set[str] = set()  # ids in the heaps: a job waits there once at most
        self._changed = asyncio.Event()

    def put(self, job_id: str, task: str, queue: str, priority: int) -> None:
        """Add a due job; it starts after every job of a higher priority, and those before it.

        A job already waiting keeps its place: it may be back before its old entry was taken
        (canceled while queued, then run again on request), and must not start twice.
        """
        if job_id in self._waiting:
            return
        self._waiting.add(job_id)
        key = (queue, task)
        item = (-priority, next(self._arrivals), job_id)
        heapq.heappush(self._heaps.setdefault(key, []), item)
        self._changed.set()

    def take(self) -> Entry | None:
        """The job to start now, counted against its limits; None if none may start."""
        best: _Key | None = None
        for key, heap in self._heaps.items():
            if self._may_start(key) and (best is None or heap[0] < self._heaps[best][0]):
                best = key
        if best is None:
            return None
        heap = self._heaps[best]
        _, _, job_id = heapq.heappop(heap)
        if not heap:  # keep the scan over pairs that have work
            del self._heaps[best]
        self._waiting.discard(job_id)
        queue, task = best
        self._running_by_queue[queue] += 1
        self._running_by_task[task] += 1
        return Entry(job_id, queue, task)

    async def get(self) -> Entry:
        """Wait for a job that may start now, and take it."""
        while (entry := self.take()) is None:
            self._changed.clear()
            await self._changed.wait()
        return entry

    def release(self, entry: Entry) -> None:
        """The job taken as ``entry`` no longer runs: its place in its limits is free."""
        self._running_by_queue[entry.queue] -= 1
        self._running_by_task[entry.task] -= 1
        self._changed.set()

    def qsize(self) -> int:
        return len(self._waiting)

    def sizes(self) -> dict[str, int]:
        """Due jobs per queue."""
        sizes: Counter[str] = Counter()
        for (queue, _), heap in self._heaps.items():
            sizes[queue] += len(heap)
        return dict(sizes)

    def _may_start(self, key: _Key) -> bool:
        queue, task = key
        queue_limit = self._queue_limits.get(queue)
        if queue_limit is not None and self._running_by_queue[queue] >= queue_limit:
            return False
        task_limit = self._task_limits.get(task)
        return task_limit is None or self._running_by_task[task] < task_limit

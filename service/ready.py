"""The jobs that are due, in the order they should start, within their concurrency limits.

Each (queue, task) pair has its own heap ordered by priority (higher first) then arrival (FIFO).
The next job is the best head among the pairs whose queue and task are both under their limits,
so a queue at its limit never holds back another queue's jobs while a worker is free. The pairs
are few (queues by tasks): choosing is a short scan and one heap pop, whatever the backlog.

A task or queue with a rate limit (``service.rates``) holds its pairs until its next start is
due; the head's own spacing (a job may set its task's rate) moves it on when it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .rates import Limits, queue_key, spacing, task_key

_Key = tuple[str, str]  # (queue, task)


@dataclass(frozen=True, slots=True)
class Entry:
    """A job taken from the ready queue; it counts against its limits until released."""

    job_id: str
    queue: str
    task: str
    # the rate limits its start moved on (key → next start, epoch seconds): to be stored
    rates: dict[str, float] = field(default_factory=dict)


class ReadyQueue:
    def __init__(
        self,
        queue_limits: Mapping[str, int],
        task_limits: Mapping[str, int | None],
        *,
        queue_gaps_s: Mapping[str, float] | None = None,
        rates: Limits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._queue_limits = dict(queue_limits)  # a queue not named here has no limit of its own
        self._task_limits = {name: limit for name, limit in task_limits.items() if limit}
        self._queue_gaps_s = dict(queue_gaps_s or {})  # queues with a rate: their interval
        self.rates = rates or Limits()
        self._clock = clock
        # heap items: (-priority, arrival, job_id, its task's interval or 0: no rate); tuples
        # keep 100,000 of them small
        self._heaps: dict[_Key, list[tuple[int, int, str, float]]] = {}
        self._arrivals = itertools.count()
        self._running_by_queue: Counter[str] = Counter()
        self._running_by_task: Counter[str] = Counter()
        self._waiting: set[str] = set()  # ids in the heaps: a job waits there once at most
        self._changed = asyncio.Event()

    def put(
        self, job_id: str, task: str, queue: str, priority: int, gap_s: float | None = None
    ) -> None:
        """Add a due job; it starts after every job of a higher priority, and those before it
        (``gap_s``: its task's rate, as an interval, if it has one).

        A job already waiting keeps its place: it may be back before its old entry was taken
        (canceled while queued, then run again on request), and must not start twice.
        """
        if job_id in self._waiting:
            return
        self._waiting.add(job_id)
        key = (queue, task)
        item = (-priority, next(self._arrivals), job_id, gap_s or 0.0)
        heapq.heappush(self._heaps.setdefault(key, []), item)
        self._changed.set()

    def take(self, now: float | None = None) -> Entry | None:
        """The job to start now, counted against its limits; None if none may start."""
        now = self._clock() if now is None else now
        best: _Key | None = None
        for key, heap in self._heaps.items():
            if (
                self._may_start(key)
                and self._open_at(key) <= now
                and (best is None or heap[0] < self._heaps[best][0])
            ):
                best = key
        if best is None:
            return None
        heap = self._heaps[best]
        _, _, job_id, gap_s = heapq.heappop(heap)
        if not heap:  # keep the scan over pairs that have work
            del self._heaps[best]
        self._waiting.discard(job_id)
        queue, task = best
        self._running_by_queue[queue] += 1
        self._running_by_task[task] += 1
        under = spacing(task, gap_s, queue, self._queue_gaps_s)
        return Entry(job_id, queue, task, self.rates.started(under, now) if under else {})

    async def get(self) -> Entry:
        """Wait for a job that may start now, and take it (a rate's next start included)."""
        while (entry := self.take()) is None:
            self._changed.clear()
            due_s = self._next_due_s()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(due_s):
                    await self._changed.wait()
        return entry

    def held_by_rate(self) -> dict[str, int]:
        """Due jobs per task that a rate limit holds back: all of a pair's while its rate's
        next start is ahead, all but the one it lets go now otherwise."""
        now = self._clock()
        held: Counter[str] = Counter()
        for key, heap in self._heaps.items():
            rated = heap[0][3] or key[0] in self._queue_gaps_s or self._open_at(key)
            if rated:
                held[key[1]] += len(heap) - (0 if self._open_at(key) > now else 1)
        return {task: n for task, n in held.items() if n}

    def _open_at(self, key: _Key) -> float:
        queue, task = key
        return self.rates.open_at((task_key(task), queue_key(queue)))

    def _next_due_s(self) -> float | None:
        """How long until a pair held only by a rate may start (None: none is)."""
        now = self._clock()
        due = [
            at for key in self._heaps
            if self._may_start(key) and (at := self._open_at(key)) > now
        ]  # fmt: skip
        return None if not due else max(0.0, min(due) - now)

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

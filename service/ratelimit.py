"""How fast each client may submit (``CONVEYOR_SUBMIT_RATE``, jobs per second): a token bucket
per token, or per address for requests without one.

A bucket holds at most one second's worth, so a burst is never more than that. A batch costs a
token per job and may take the bucket below zero (else a batch larger than a second's worth
could never pass); the next submit then waits until it is above zero again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

MAX_BUCKETS = 100_000  # clients remembered at once; full buckets are forgotten first


class SubmitRate:
    def __init__(self, jobs_per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.jobs_per_s = jobs_per_s
        self._capacity = max(1.0, jobs_per_s)  # a second's worth (one job, at a slow rate)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client → (tokens, as of when)

    def take(self, client: str, jobs: int) -> float | None:
        """Take ``jobs`` from ``client``'s bucket; None when it may submit, else how many
        seconds until it may try again."""
        now = self._clock()
        tokens, then = self._buckets.get(client, (self._capacity, now))
        tokens = min(self._capacity, tokens + (now - then) * self.jobs_per_s)
        if tokens < 1:  # not one job's worth: wait for it
            self._buckets[client] = (tokens, now)
            return (1 - tokens) / self.jobs_per_s
        self._buckets[client] = (tokens - jobs, now)
        if len(self._buckets) > MAX_BUCKETS:
            self._forget_full(now)
        return None

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that have filled up again: a client that comes back starts full."""
        for client, (tokens, then) in list(self._buckets.items()):
            if tokens + (now - then) * self.jobs_per_s >= self._capacity:
                del self._buckets[client]

"""Counts of stored jobs by queue and state, and how many finished in each recent interval.

The store keeps one ``JobStats``: it is seeded from the tables at start, then follows every
committed ``state`` event (which names the state a job left) and ``pruned`` event, so
``GET /stats`` costs no query however many jobs are stored, and a client that applies the same
events to a copy keeps it as exact.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from .jobs import TERMINAL, Event, JobState, isoformat

BUCKET_S = 10  # the throughput's resolution
WINDOW_S = 900  # how far back the throughput goes: 15 minutes

_STATES = tuple(s.value for s in JobState)
_TERMINAL = frozenset(s.value for s in TERMINAL)


def bucket_of(at: float) -> int:
    """The start (epoch seconds, a multiple of BUCKET_S) of the interval ``at`` falls in."""
    return int(at // BUCKET_S) * BUCKET_S


class JobStats:
    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()  # (queue, state) → jobs
        self._finished: dict[int, Counter[str]] = {}  # bucket start → terminal state → jobs

    def seed(
        self,
        counts: Iterable[tuple[str, str, int]],
        finished: Iterable[tuple[int, str, int]],
    ) -> None:
        """Start from (queue, state, jobs) and (bucket start, terminal state, jobs) rows."""
        self._counts = Counter({(queue, state): n for queue, state, n in counts})
        self._finished = {}
        for bucket, state, n in finished:
            self._finished.setdefault(bucket, Counter())[state] += n

    def apply(self, events: Iterable[Event]) -> None:
        """Follow committed events: a ``state`` event moves its job from one count to another;
        a ``pruned`` event takes the jobs it names out."""
        for event in events:
            if event.kind == "pruned":
                for removed in event.data["removed"]:
                    self._take((removed["queue"], removed["state"]), removed["jobs"])
                continue
            if event.kind != "state":
                continue
            queue, state = event.data["queue"], event.data["state"]
            previous = event.data.get("from")
            if previous is not None:
                self._take((queue, previous), 1)
            self._counts[(queue, state)] += 1
            if state in _TERMINAL:
                self._count_finished(bucket_of(event.at), state)

    def _count_finished(self, bucket: int, state: str) -> None:
        if bucket not in self._finished:  # a new interval: let go of those out of the window
            for old in [b for b in self._finished if b <= bucket - WINDOW_S]:
                del self._finished[old]
        self._finished.setdefault(bucket, Counter())[state] += 1

    def _take(self, key: tuple[str, str], n: int) -> None:
        left = self._counts[key] - n
        if left > 0:
            self._counts[key] = left
        else:
            self._counts.pop(key, None)

    def queued_by_queue(self) -> dict[str, int]:
        """The queued jobs of each queue that has some."""
        return {queue: n for (queue, state), n in sorted(self._counts.items()) if state == "queued"}

    def as_json(self, now: float) -> dict[str, Any]:
        """``GET /stats``: totals by state, by queue and state, and the recent throughput."""
        by_state = dict.fromkeys(_STATES, 0)
        by_queue: dict[str, dict[str, int]] = {}
        for (queue, state), n in sorted(self._counts.items()):
            by_state[state] = by_state.get(state, 0) + n
            by_queue.setdefault(queue, dict.fromkeys(_STATES, 0))[state] = n
        last = bucket_of(now)
        buckets = []
        for start in range(window_start(now), last + BUCKET_S, BUCKET_S):
            done = self._finished.get(start, Counter())
            buckets.append({"at": isoformat(start), **{s: done[s] for s in sorted(_TERMINAL)}})
        return {
            "total": sum(by_state.values()),
            "by_state": by_state,
            "by_queue": by_queue,
            "throughput": {"bucket_s": BUCKET_S, "window_s": WINDOW_S, "buckets": buckets},
        }


def window_start(now: float) -> int:
    """The first bucket's start: what the store reads back at start-up."""
    return bucket_of(now) - WINDOW_S + BUCKET_S

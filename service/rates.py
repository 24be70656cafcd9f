"""Task and queue rate limits, as Celery writes them (``"100/m"``): jobs beyond the rate wait
``queued`` and start evenly spaced, one each ``interval_s``, with no burst beyond one.

A limit is kept as the earliest time the next job under it may start (``next_at``): a job that
starts at ``now`` moves it to ``max(now, next_at) + interval_s``. So a limit idle for long lets
one job start at once and the next one an interval later, never two together.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

RATE_PATTERN = r"^[1-9][0-9]{0,8}/(s|m|h|d)$"
RATE_RULE = "a count per second, minute, hour or day, e.g. 100/m"
_RATE = re.compile(RATE_PATTERN)
_PER_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def is_rate(text: object) -> bool:
    return isinstance(text, str) and _RATE.fullmatch(text) is not None


def interval_s(rate: str) -> float:
    """The time between two starts at ``rate``: ``"60/m"`` → 1.0. ValueError if not a rate."""
    if not is_rate(rate):
        raise ValueError(f"{rate!r} is not {RATE_RULE}")
    count, _, unit = rate.partition("/")
    return _PER_S[unit] / int(count)


def task_key(task: str) -> str:
    return f"task:{task}"


def queue_key(queue: str) -> str:
    return f"queue:{queue}"


def spacing(
    task: str, task_gap_s: float | None, queue: str, queue_gaps_s: Mapping[str, float]
) -> dict[str, float]:
    """The rate limits a job starts under (key → interval): its task's (``task_gap_s``, as
    its options say) and its queue's."""
    limits = {} if not task_gap_s else {task_key(task): task_gap_s}
    if queue in queue_gaps_s:
        limits[queue_key(queue)] = queue_gaps_s[queue]
    return limits


def gap_s(rate: str | None) -> float | None:
    """``interval_s`` of a rate that may be unset."""
    return None if rate is None else interval_s(rate)


class Limits:
    """When the next job under each limit may start (epoch seconds); limits with nothing to
    say are not kept."""

    def __init__(self, next_at: Mapping[str, float] | None = None) -> None:
        self.next_at: dict[str, float] = dict(next_at or {})

    def open_at(self, keys: Iterable[str]) -> float:
        """The earliest time a job under all of ``keys`` may start (0: no limit holds it)."""
        return max((self.next_at.get(key, 0.0) for key in keys), default=0.0)

    def started(self, spacing: Mapping[str, float], now: float) -> dict[str, float]:
        """A job under these limits (key → its interval) started at ``now``: each limit's
        next start moves on; what moved, to be stored."""
        moved = {}
        for key, gap_s in spacing.items():
            moved[key] = max(now, self.next_at.get(key, 0.0)) + gap_s
        self.next_at.update(moved)
        return moved

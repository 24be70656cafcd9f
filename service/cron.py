"""Cron expressions and the schedule record: when ticks fall, in a time zone. Pure: no I/O.

croniter parses and steps through the expression; this module adds what a service needs on
top: one accepted syntax, clear errors, and the daylight-saving rules of classic cron. A time
that clocks skip (spring forward) fires once, at the change; a time that happens twice (fall
back) fires once when the expression names fixed times, and on both passes when its minute or
hour is a wildcard (an interval keeps its pace in real time).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any, Literal

from .options import JobOptions

if TYPE_CHECKING:
    from croniter import croniter

MAX_CRON_LENGTH = 200
ALIASES = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)
# croniter's H (hashed) and R (random) values: the ticks would differ each time they are computed
_UNSTABLE_FIELD = re.compile(r"[hr](\(\d+-\d+\))?(/\d+)?", re.IGNORECASE)
# how many ticks in a repeated hour (clocks going back) may be passed over in a row: one hour
# of per-second ticks
_MAX_SKIPPED = 3600

Source = Literal["api", "task"]  # made with POST /schedules, or declared by @task(cron=...)


def check_cron(text: str) -> str:
    """``text`` as a usable cron expression (trimmed); ValueError saying what is wrong.

    Five fields (minute hour day-of-month month day-of-week), six with seconds first, or an
    alias such as ``@hourly``.
    """
    if not isinstance(text, str):
        raise ValueError(f"a cron expression is text such as '*/5 * * * *', got {text!r}")
    expression = " ".join(text.split())
    if len(expression) > MAX_CRON_LENGTH:
        raise ValueError(f"a cron expression has at most {MAX_CRON_LENGTH} characters")
    fields = expression.split()
    if expression.startswith("@"):
        if expression.lower() not in ALIASES:
            known = ", ".join(sorted(ALIASES))
            raise ValueError(f"unknown cron alias {expression!r}; known: {known}")
    elif len(fields) not in (5, 6):
        raise ValueError(
            f"{expression!r} has {len(fields)} field(s); a cron expression has 5 (minute hour "
            "day-of-month month day-of-week), or 6 with seconds first"
        )
    if any(_UNSTABLE_FIELD.fullmatch(f) for f in fields):
        raise ValueError(f"{expression!r}: hashed (H) and random (R) values are not supported")
    from croniter import CroniterError

    try:
        _iterator(expression, 0.0, UTC).get_next(float)
    except CroniterError as exc:
        if "failed to find" in str(exc):
            raise ValueError(f"{expression!r} never matches a date") from None
        raise ValueError(f"invalid cron expression {expression!r}: {exc}") from None
    return expression


def next_tick(expression: str, after: float, zone: tzinfo) -> float | None:
    """The first tick strictly after ``after`` (epoch seconds); None if there is none."""
    iterator = _iterator(expression, after, zone)
    return _step(iterator, iterator.get_next, zone)


def latest_tick(expression: str, until: float, zone: tzinfo) -> float | None:
    """The last tick at or before ``until`` (epoch seconds); None if there is none."""
    # ticks fall on whole seconds: "before the next whole second" is "at or before until"
    iterator = _iterator(expression, float(int(until) + 1), zone)
    return _step(iterator, iterator.get_prev, zone)


def _iterator(expression: str, start: float, zone: tzinfo) -> croniter:
    # imported on first use: croniter and dateutil cost the service about 1 MiB, and only
    # schedules need them
    from croniter import croniter

    return croniter(expression, datetime.fromtimestamp(start, zone), second_at_beginning=True)


def _step(iterator: croniter, step: Callable[..., Any], zone: tzinfo) -> float | None:
    from croniter import CroniterError

    minute, hour = iterator.expressions[0], iterator.expressions[1]
    fixed_time = not (minute.startswith("*") or hour.startswith("*"))
    try:
        for _ in range(_MAX_SKIPPED):
            tick = float(step(float))
            if not (fixed_time and _second_pass(tick, zone)):
                return tick
    except CroniterError:  # no date matches within croniter's search (decades)
        return None
    return tick


def _second_pass(epoch_s: float, zone: tzinfo) -> bool:
    """Whether the local time at ``epoch_s`` is the second occurrence of a repeated time."""
    local = datetime.fromtimestamp(epoch_s, zone)
    return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()


@dataclass(frozen=True, slots=True)
class Schedule:
    """A task run at every tick of a cron expression: one job per tick, never more."""

    id: str
    task: str
    cron: str  # checked by check_cron
    created_at: float  # epoch seconds; the first tick is the first one after this
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: JobOptions = field(default_factory=JobOptions)  # over the task's own
    source: Source = "api"
    last_tick_at: float | None = None  # the latest tick that made a job
    paused: bool = False  # makes no job until resumed
    resumed_at: float | None = None  # epoch seconds: the latest resume

    @property
    def fired_until(self) -> float:
        """Ticks up to this time are done with: fired, before the schedule existed, or passed
        while it was paused (a resume does not make up for them)."""
        return max(self.created_at, self.last_tick_at or 0.0, self.resumed_at or 0.0)

    def next_run_at(self, zone: tzinfo) -> float | None:
        """The next tick that makes a job; None while paused, or if no date ever matches."""
        return None if self.paused else next_tick(self.cron, self.fired_until, zone)

    def fired(self, tick_at: float) -> Schedule:
        """This schedule once the tick at ``tick_at`` has fired (a later one stays the latest)."""
        return dataclasses.replace(self, last_tick_at=max(tick_at, self.last_tick_at or tick_at))

    def due_tick(self, now: float, zone: tzinfo) -> float | None:
        """The tick to fire at ``now``: the latest one not fired yet, or None if none is due.

        Ticks missed meanwhile (the service was down) are not made up one by one: the latest
        stands for them all.
        """
        first = self.next_run_at(zone)
        if first is None or first > now:
            return None
        latest = latest_tick(self.cron, now, zone)
        return first if latest is None else max(first, latest)

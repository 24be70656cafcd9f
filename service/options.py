"""A job's options and the one home of their rules.

What each option may be is said once, in ``RULES``: ``@task(...)`` checks its arguments with it,
the API's request models take their bounds from it (so ``/openapi.json`` shows them), the
``conveyor`` command checks its flags with it, and a stored job's options passed it on the way
in. Imported by worker processes too (through ``tasks``), so it stays free of anything heavy.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .rates import RATE_PATTERN, RATE_RULE, is_rate

DEFAULT_QUEUE = "default"
MAX_PRIORITY = 1_000_000
MAX_RETRIES = 1000
# The longest any of a job's durations may be. A bound keeps every time the service works out
# from one (a deadline, a retry's start) within what a timer, SQLite and ISO-8601 can hold.
MAX_DURATION_S = 366 * 24 * 3600.0
MAX_MEMORY_LIMIT_MB = 1024 * 1024  # a tebibyte
MAX_RETRY_ON = 100  # error types named by one job
MAX_ERROR_TYPE_CHARS = 200
QUEUE_NAME_PATTERN = r"^[A-Za-z0-9._:-]{1,100}$"
QUEUE_NAME_RULE = "1 to 100 letters, digits and . _ : -"
_QUEUE_NAME = re.compile(QUEUE_NAME_PATTERN)

Kind = Literal["seconds", "whole", "queue", "error types", "rate"]


def is_queue_name(name: str) -> bool:
    return isinstance(name, str) and _QUEUE_NAME.fullmatch(name) is not None


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Rule:
    """What one option may be: its kind and, for numbers, its bounds (``low`` excluded when
    ``above``: a duration is > 0, a count >= 0)."""

    kind: Kind
    description: str
    low: float | None = None
    high: float | None = None
    above: bool = False

    def expects(self) -> str:
        """What the option must be, as a message says it."""
        if self.kind == "queue":
            return QUEUE_NAME_RULE
        if self.kind == "rate":
            return RATE_RULE
        if self.kind == "error types":
            return f"a list of at most {MAX_RETRY_ON} error type names"
        what = "a number of seconds" if self.kind == "seconds" else "a whole number"
        if self.low is not None and self.high is not None and not self.above:
            return f"{what} from {_number(self.low)} to {_number(self.high)}"
        low = "" if self.low is None else f" {'>' if self.above else '>='} {_number(self.low)}"
        high = "" if self.high is None else f" and at most {_number(self.high)}"
        return f"{what}{low}{high}"

    def allows(self, value: Any) -> bool:
        match self.kind:
            case "queue":
                return is_queue_name(value)
            case "rate":
                return is_rate(value)
            case "error types":
                return (
                    isinstance(value, list | tuple)
                    and len(value) <= MAX_RETRY_ON
                    and all(
                        isinstance(n, str) and 1 <= len(n) <= MAX_ERROR_TYPE_CHARS for n in value
                    )
                )
            case "seconds":
                if not (_is_number(value) and math.isfinite(value)):
                    return False
            case "whole":
                if not _is_whole(value):
                    return False
        if self.low is not None and (value <= self.low if self.above else value < self.low):
            return False
        return self.high is None or value <= self.high

    def bounds(self) -> dict[str, Any]:
        """The bounds as pydantic's ``Field`` takes them (and JSON Schema shows them)."""
        if self.kind == "queue":  # shown, not checked: is_queue_name's message says more
            return {"json_schema_extra": {"pattern": QUEUE_NAME_PATTERN}}
        if self.kind == "rate":
            return {"json_schema_extra": {"pattern": RATE_PATTERN}}
        if self.kind == "error types":
            return {"max_length": MAX_RETRY_ON}
        bounds: dict[str, Any] = {}
        if self.low is not None:
            bounds["gt" if self.above else "ge"] = self.low
        if self.high is not None:
            bounds["le"] = self.high
        return bounds


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _seconds(description: str) -> Rule:
    return Rule("seconds", description, low=0, high=MAX_DURATION_S, above=True)


# Every option's rule, in the order the API lists them.
RULES: dict[str, Rule] = {
    "timeout_s": _seconds("kill the job's processes after this long"),
    "soft_timeout_s": _seconds("raise SoftTimeout inside the job after this long"),
    "max_retries": Rule("whole", "failures to retry", low=0, high=MAX_RETRIES),
    "retry_backoff_s": _seconds("the first retry's wait; doubled for each one after"),
    "retry_backoff_max_s": _seconds("the longest wait before a retry"),
    "retry_on": Rule("error types", "error types worth a retry (default: any)"),
    "priority": Rule("whole", "higher starts first", low=-MAX_PRIORITY, high=MAX_PRIORITY),
    "queue": Rule("queue", "the queue whose concurrency limit (CONVEYOR_QUEUES) applies"),
    "memory_limit_mb": Rule(
        "whole", "what the job may allocate, in MB; over it: MemoryError", 1, MAX_MEMORY_LIMIT_MB
    ),
    "rate_limit": Rule(
        "rate", "the task's jobs start at most this often, evenly spaced (100/m: one each 0.6 s)"
    ),
}


@dataclass(frozen=True, slots=True)
class JobOptions:
    """How a job runs: set per task in ``@task(...)`` and per job on submit (the job's wins).

    None leaves an option to the level below (the task's, then ``DEFAULT_OPTIONS``).
    """

    timeout_s: float | None = None  # hard limit: the job's process tree is killed
    soft_timeout_s: float | None = None  # SoftTimeout is raised inside the task first
    max_retries: int | None = None  # failures retried before the job fails for good
    retry_backoff_s: float | None = None  # the first retry's wait; doubled for each one after
    retry_backoff_max_s: float | None = None  # the longest wait
    retry_on: tuple[str, ...] | None = None  # error types worth a retry; None: any
    priority: int | None = None  # higher runs first; FIFO within a priority
    queue: str | None = None  # whose concurrency limit (CONVEYOR_QUEUES) the job counts against
    memory_limit_mb: int | None = None  # what the job may allocate; over it: MemoryError
    rate_limit: str | None = None  # "100/m": its task's jobs start at most this often

    def merged(self, overrides: JobOptions) -> JobOptions:
        """These options with every value ``overrides`` sets put in their place."""
        changes = {
            f.name: getattr(overrides, f.name)
            for f in dataclasses.fields(overrides)
            if getattr(overrides, f.name) is not None
        }
        return dataclasses.replace(self, **changes) if changes else self

    def invalid(self) -> list[tuple[str, str]]:
        """(option, what it must be) for each value its rule refuses."""
        return [
            (name, rule.expects())
            for name, rule in RULES.items()
            if (value := getattr(self, name)) is not None and not rule.allows(value)
        ]

    def problem(self) -> str | None:
        """What makes these options unusable together, if anything."""
        if (
            self.timeout_s is not None
            and self.soft_timeout_s is not None
            and self.soft_timeout_s >= self.timeout_s
        ):
            return (
                f"soft_timeout_s ({self.soft_timeout_s}) must be shorter than "
                f"timeout_s ({self.timeout_s})"
            )
        return None

    def check(self, spell: Callable[[str], str] = str) -> None:
        """ValueError naming the first option its rule refuses (``spell`` names it as the
        caller knows it, ``@task(timeout_s=...)`` say), or the problem of them together."""
        for name, expects in self.invalid():
            raise ValueError(f"{spell(name)} must be {expects}, got {getattr(self, name)!r}")
        problem = self.problem()
        if problem is not None:
            raise ValueError(problem)

    def as_dict(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in _NAMES}
        if self.retry_on is not None:
            values["retry_on"] = list(self.retry_on)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> JobOptions:
        fields = {k: v for k, v in values.items() if k in _KNOWN}
        if fields.get("retry_on") is not None:
            fields["retry_on"] = tuple(fields["retry_on"])
        return cls(**fields)


# the options' names, looked up once: dataclasses.fields() builds a tuple at every call, and
# every job read or answered goes through as_dict or from_dict
_NAMES = tuple(f.name for f in dataclasses.fields(JobOptions))
_KNOWN = frozenset(_NAMES)

# What a job gets for the options neither its task nor its submit sets.
DEFAULT_OPTIONS = JobOptions(
    max_retries=0, retry_backoff_s=1.0, retry_backoff_max_s=300.0, priority=0, queue=DEFAULT_QUEUE
)

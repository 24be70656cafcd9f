"""The job record, its states and the only place where a job changes state."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from .errors import InvalidTransition
from .options import DEFAULT_OPTIONS, DEFAULT_QUEUE, JobOptions

DependencyFailure = Literal["cancel", "run"]
DEPENDENCY_FAILED = "dependency_failed"  # the error type of a job canceled for a dependency
MAX_DEPENDENCIES = 1000  # jobs one job may depend on


class JobState(StrEnum):
    WAITING = "waiting"  # for the jobs it depends on (depends_on) to finish
    SCHEDULED = "scheduled"  # waiting for its time (scheduled_at)
    QUEUED = "queued"  # due, waiting for a free worker
    RUNNING = "running"  # a worker process is executing it
    SUCCEEDED = "succeeded"  # returned a JSON result
    FAILED = "failed"  # raised, crashed its worker, or returned something that is not JSON
    CANCELED = "canceled"  # stopped on request, before or while running


ACTIVE: frozenset[JobState] = frozenset(
    {JobState.WAITING, JobState.SCHEDULED, JobState.QUEUED, JobState.RUNNING}
)
TERMINAL: frozenset[JobState] = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED})
TERMINAL_VALUES: frozenset[str] = frozenset(state.value for state in TERMINAL)  # as events say

# Every allowed move; anything else is a bug or a race lost, and raises InvalidTransition.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    # released when the jobs it depends on have finished: due (or later), or canceled
    JobState.WAITING: frozenset({JobState.SCHEDULED, JobState.QUEUED, JobState.CANCELED}),
    JobState.SCHEDULED: frozenset({JobState.QUEUED, JobState.CANCELED}),
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELED}),
    # back to QUEUED: the service stopped or died under the job, which runs again;
    # to SCHEDULED: it failed and waits for its retry
    JobState.RUNNING: frozenset(
        {
            JobState.SUCCEEDED,
            JobState.FAILED,
            JobState.CANCELED,
            JobState.QUEUED,
            JobState.SCHEDULED,
        }
    ),
    JobState.SUCCEEDED: frozenset(),
    # queued again only on request (POST /jobs/<id>/retry): the same job, a new attempt
    JobState.FAILED: frozenset({JobState.QUEUED}),
    # to WAITING: a step of a workflow canceled for the step before it, which is run again
    JobState.CANCELED: frozenset({JobState.QUEUED, JobState.WAITING}),
}


@dataclass(frozen=True, slots=True)
class Progress:
    done: float
    total: float | None = None
    message: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"done": self.done, "total": self.total, "message": self.message}


@dataclass(frozen=True, slots=True)
class JobError:
    """Why a job failed: an exception's type name, its message and the traceback text."""

    type: str
    message: str
    traceback: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "traceback": self.traceback}


@dataclass(frozen=True, slots=True)
class Attempt:
    """One run of a job that has ended, kept as the job's history."""

    number: int
    started_at: float | None
    finished_at: float
    outcome: str  # the state it led to, or "retried", "interrupted"
    error: JobError | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "number": self.number, "started_at": self.started_at,
            "finished_at": self.finished_at, "outcome": self.outcome,
            "error": None if self.error is None else self.error.as_dict(),
        }  # fmt: skip

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Attempt:
        error = values.get("error")
        return cls(
            values["number"], values["started_at"], values["finished_at"], values["outcome"],
            None if error is None else JobError(**error),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What a submit asks for."""

    task: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: JobOptions = field(default_factory=JobOptions)  # over the task's own
    run_at: float | None = None  # epoch seconds; None or past: due now
    key: str | None = None  # unique among unfinished jobs
    schedule_id: str | None = None  # the schedule whose tick asks for it
    depends_on: tuple[str, ...] = ()  # jobs that must succeed first (waiting until then)
    on_dependency_failure: DependencyFailure = "cancel"


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    state: JobState
    created_at: float  # epoch seconds, like every *_at
    attempt: int = 0  # how many times it has started
    interruptions: int = 0  # how many times the service died while it ran
    progress: Progress | None = None
    result: Any = None
    error: JobError | None = None
    started_at: float | None = None
    finished_at: float | None = None
    options: JobOptions = field(default_factory=JobOptions)
    scheduled_at: float | None = None  # when a scheduled job becomes due
    retries: int = 0  # failures retried so far (not the interruptions)
    attempts: tuple[Attempt, ...] = ()  # every run that ended, oldest first
    key: str | None = None  # no two unfinished jobs share one
    schedule_id: str | None = None  # the schedule whose tick made it; None: submitted
    depends_on: tuple[str, ...] = ()  # the jobs it waits for, as submitted
    # a job it depends on failed or was canceled: cancel this one too, or run it anyway
    on_dependency_failure: DependencyFailure = "cancel"
    waiting_on: int = 0  # of depends_on, how many have not finished (while waiting)
    # what it takes from the jobs before it in its workflow, put first in its arguments once
    # they have succeeded (see workflows.resolve); None: nothing
    input: dict[str, Any] | None = None
    workflow_id: str | None = None  # the workflow it is a step of

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def queue(self) -> str:
        return self.options.queue or DEFAULT_QUEUE

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


@dataclass(frozen=True, slots=True)
class Event:
    """One persisted change of a job; ``id`` is the SSE id, strictly increasing."""

    id: int
    job_id: str
    kind: str  # "state", "progress" or "log"
    at: float
    data: dict[str, Any] = field(default_factory=dict)


def transition(job: Job, target: JobState, at: float, **changes: Any) -> Job:
    """Return ``job`` moved to ``target`` at time ``at``; the only way a job changes state."""
    if target not in TRANSITIONS[job.state]:
        raise InvalidTransition(job.id, job.state, target, job)
    if target is JobState.RUNNING:
        changes.setdefault("started_at", at)
        changes.setdefault("attempt", job.attempt + 1)
        changes.setdefault("finished_at", None)
    elif target in TERMINAL:
        changes.setdefault("finished_at", at)
    elif target is JobState.QUEUED:
        changes.setdefault("progress", None)
        if job.state in TERMINAL:  # a retry on request: a fresh start, its history kept
            changes.update(finished_at=None, result=None, error=None, retries=0)
    elif target is JobState.WAITING:  # waits again: the step before it runs again
        changes.update(finished_at=None, error=None)
    if job.state is JobState.RUNNING and target is not JobState.RUNNING:
        outcome = changes.pop("outcome", target.value)
        ended = Attempt(job.attempt, job.started_at, at, outcome, changes.get("error"))
        changes["attempts"] = (*job.attempts, ended)
    return dataclasses.replace(job, state=target, **changes)


def retry_delay_s(options: JobOptions, retry: int, rand: Callable[[], float]) -> float:
    """How long retry number ``retry`` (1 for the first) waits: exponential, capped, half of it
    jittered so that jobs failing together do not all come back together."""
    base_s = options.retry_backoff_s or DEFAULT_OPTIONS.retry_backoff_s or 1.0
    cap_s = options.retry_backoff_max_s or DEFAULT_OPTIONS.retry_backoff_max_s or base_s
    wait_s = min(cap_s, base_s * 2.0 ** min(retry - 1, 64))
    return wait_s / 2 + rand() * wait_s / 2


def retries_left(job: Job, error: JobError) -> bool:
    """Whether ``job``, failing with ``error``, has a retry to spend on it."""
    if job.retries >= (job.options.max_retries or 0):
        return False
    return job.options.retry_on is None or error.type in job.options.retry_on


def state_event_data(job: Job, previous: JobState | None) -> dict[str, Any]:
    """What a ``state`` event says about ``job`` (enough for a list row to update itself).

    ``from`` is the state it left (None for a new job): with it, a client keeps counts by
    state and queue from the events alone.
    """
    data: dict[str, Any] = {
        "job_id": job.id,
        "task": job.task,
        "queue": job.queue,
        "from": None if previous is None else previous.value,
        "state": job.state.value,
        "attempt": job.attempt,
    }
    if job.error is not None:
        data["error"] = {"type": job.error.type, "message": job.error.message}
    return data


def isoformat(epoch_s: float | None) -> str | None:
    """ISO-8601 in UTC with milliseconds, e.g. ``2026-11-21T10:49:00.123Z``."""
    if epoch_s is None:
        return None
    if not _EARLIEST_S <= epoch_s <= _LATEST_S:  # also NaN and the infinities
        # a stored time past what ISO-8601 shows (stored before its option had a bound, say)
        # is shown at the edge: a read never fails on a value
        finite_below = epoch_s < _EARLIEST_S and math.isfinite(epoch_s)
        epoch_s = _EARLIEST_S if finite_below else _LATEST_S
    m = datetime.fromtimestamp(epoch_s, UTC)
    # what m.isoformat(timespec="milliseconds") says, at a third of its cost: a job's answer
    # or event carries up to six of these
    return (
        f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}"
        f".{m.microsecond // 1000:03d}Z"
    )


_EARLIEST_S = datetime(1, 1, 1, tzinfo=UTC).timestamp()
_LATEST_S = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC).timestamp()


def interrupt(job: Job, at: float, max_interruptions: int) -> Job:
    """The running ``job`` after the service stopped or died under it.

    It runs again (a new attempt that spends no retry) unless it has been interrupted more than
    ``max_interruptions`` times: a job that brings the service down each time must stop somewhere.
    """
    interruptions = job.interruptions + 1
    if interruptions > max_interruptions:
        error = JobError(
            "Interrupted",
            f"the service stopped under this job {interruptions} times "
            f"(CONVEYOR_MAX_INTERRUPTIONS is {max_interruptions})",
        )
        return transition(job, JobState.FAILED, at, error=error, interruptions=interruptions)
    return transition(job, JobState.QUEUED, at, interruptions=interruptions, outcome="interrupted")


def released(job: Job, failed: Job | None, remaining: int, at: float) -> Job:
    """The waiting ``job`` once one of its dependencies has finished (``failed``: that one,
    if it failed or was canceled), with ``remaining`` of them still unfinished.

    It is canceled as soon as one fails (unless it runs anyway: ``on_dependency_failure``),
    waits on while some remain, and is due (or scheduled, for a later ``scheduled_at``) once
    none does.
    """
    if failed is not None and job.on_dependency_failure == "cancel":
        error = JobError(DEPENDENCY_FAILED, f"job {failed.id} it depends on {failed.state.value}")
        return transition(job, JobState.CANCELED, at, error=error, waiting_on=0)
    if remaining > 0:
        return dataclasses.replace(job, waiting_on=remaining)
    if job.scheduled_at is not None and job.scheduled_at > at:
        return transition(job, JobState.SCHEDULED, at, waiting_on=0)
    return transition(job, JobState.QUEUED, at, scheduled_at=None, waiting_on=0)


def reopened(job: Job, rerun: str, waiting_on: int, at: float) -> Job | None:
    """A job canceled because ``rerun`` (the job it waited for) failed, waiting again now that
    ``rerun`` runs again (with ``waiting_on`` of its dependencies unfinished); None if it was
    canceled for another reason, or is not canceled."""
    error = job.error
    canceled_for_it = (
        job.state is JobState.CANCELED
        and error is not None
        and error.type == DEPENDENCY_FAILED
        and error.message.startswith(f"job {rerun} ")
    )
    if not canceled_for_it:
        return None
    return transition(job, JobState.WAITING, at, waiting_on=waiting_on)


def is_failure(job: Job) -> bool:
    """Whether ``job`` ended without succeeding (what cancels the jobs waiting on it)."""
    return job.state in _FAILED


_FAILED = frozenset({JobState.FAILED, JobState.CANCELED})

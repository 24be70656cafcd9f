"""The job record, its states and the only place where a job changes state."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from .errors import InvalidTransition


class JobState(StrEnum):
    SCHEDULED = "scheduled"  # waiting for its time (scheduled_at)
    QUEUED = "queued"  # due, waiting for a free worker
    RUNNING = "running"  # a worker process is executing it
    SUCCEEDED = "succeeded"  # returned a JSON result
    FAILED = "failed"  # raised, crashed its worker, or returned something that is not JSON
    CANCELED = "canceled"  # stopped on request, before or while running


ACTIVE: frozenset[JobState] = frozenset({JobState.SCHEDULED, JobState.QUEUED, JobState.RUNNING})
TERMINAL: frozenset[JobState] = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED})

# Every allowed move; anything else is a bug or a race lost, and raises InvalidTransition.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.SCHEDULED: frozenset({JobState.QUEUED, JobState.CANCELED}),
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELED}),
    # back to QUEUED: the service stopped or died under the job, which runs again
    JobState.RUNNING: frozenset(
        {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED, JobState.QUEUED}
    ),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELED: frozenset(),
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
class JobOptions:
    """How a job runs: set per task in ``@task(...)`` and per job on submit (the job's wins)."""

    timeout_s: float | None = None  # hard limit: the job's process tree is killed
    soft_timeout_s: float | None = None  # SoftTimeout is raised inside the task first

    def merged(self, overrides: JobOptions) -> JobOptions:
        """These options with every value ``overrides`` sets put in their place."""
        changes = {
            f.name: getattr(overrides, f.name)
            for f in dataclasses.fields(overrides)
            if getattr(overrides, f.name) is not None
        }
        return dataclasses.replace(self, **changes)

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

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> JobOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What a submit asks for."""

    task: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: JobOptions = field(default_factory=JobOptions)  # over the task's own
    run_at: float | None = None  # epoch seconds; None or past: due now


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

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL

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
    kind: str  # "state" or "progress"
    at: float
    data: dict[str, Any] = field(default_factory=dict)


def transition(job: Job, target: JobState, at: float, **changes: Any) -> Job:
    """Return ``job`` moved to ``target`` at time ``at``; the only way a job changes state."""
    if target not in TRANSITIONS[job.state]:
        raise InvalidTransition(job.id, job.state, target)
    if target is JobState.RUNNING:
        changes.setdefault("started_at", at)
        changes.setdefault("attempt", job.attempt + 1)
        changes.setdefault("finished_at", None)
    elif target in TERMINAL:
        changes.setdefault("finished_at", at)
    elif target is JobState.QUEUED:
        changes.setdefault("progress", None)
    return dataclasses.replace(job, state=target, **changes)


def state_event_data(job: Job) -> dict[str, Any]:
    """What a ``state`` event says about ``job`` (enough for a list row to update itself)."""
    data: dict[str, Any] = {
        "job_id": job.id,
        "task": job.task,
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
    moment = datetime.fromtimestamp(epoch_s, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
    return transition(job, JobState.QUEUED, at, interruptions=interruptions)

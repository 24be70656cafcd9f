"""The service's exceptions: one base class, each message built from its fields.

A job that fails is data (its state and error record), never one of these.
"""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .jobs import Job


class ServiceError(Exception):
    """Base class of every error the service raises on purpose."""


class SettingsError(ServiceError):
    """A ``CONVEYOR_*`` environment variable is unknown or malformed."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}")


class StoreUnavailable(ServiceError):
    """The database cannot be opened, or another service is using it."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot use the database {path!r} (CONVEYOR_DATABASE): {reason}")


class StoreFailed(ServiceError):
    """A write to the database failed (the disk is full, another process holds it, the file is
    read-only or gone): nothing of it was stored. The service goes on, and recovers by itself
    once the cause is gone."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"the database cannot be written just now: {reason}")


class TaskLoadError(ServiceError):
    """A configured task module could not be imported."""

    def __init__(self, module: str, reason: str) -> None:
        self.module = module
        self.reason = reason
        super().__init__(f"cannot import task module {module!r}: {reason}")


class UnknownTask(ServiceError):
    """No task is registered under this name."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"unknown task {name!r}")


class InvalidArguments(ServiceError):
    """The arguments do not bind to the task's signature."""

    def __init__(self, task: str, reason: str, fields: list[dict[str, str]] | None = None) -> None:
        self.task = task
        self.reason = reason
        self.fields = fields or []  # {"field": a parameter's name, "message": its problem}
        super().__init__(f"arguments do not match task {task!r}: {reason}")


class InvalidOptions(ServiceError):
    """A job's options (its own merged over its task's) cannot be used together."""

    def __init__(self, task: str, reason: str) -> None:
        self.task = task
        self.reason = reason
        super().__init__(f"invalid options for task {task!r}: {reason}")


class BatchRejected(ServiceError):
    """One job of a batch submit is invalid, so none of them is created."""

    def __init__(self, index: int, cause: UnknownTask | InvalidArguments | InvalidOptions) -> None:
        self.index = index
        self.cause = cause
        super().__init__(f"jobs[{index}]: {cause}")


class UnsafeText(ServiceError):
    """A value holds a character that does not show as what it is (a control, a bidirectional
    override): refused where people read values and compare them by eye."""

    def __init__(self, field: str, char: str) -> None:
        self.field = field
        self.char = char
        super().__init__(
            f"{field}: the character U+{ord(char):04X} ({unicodedata.name(char, 'a control')}) "
            "does not show as what it is; leave it out"
        )


class JobNotFound(ServiceError):
    """No job has this id."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no job with id {job_id!r}")


class WorkflowNotFound(ServiceError):
    """No workflow has this id."""

    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        super().__init__(f"no workflow with id {workflow_id!r}")


class StepRejected(ServiceError):
    """One step of a workflow is invalid (``step``: where, as ``chain[2].group[0]``), so none
    of its jobs is created."""

    def __init__(self, step: str, cause: UnknownTask | InvalidArguments | InvalidOptions) -> None:
        self.step = step
        self.cause = cause
        super().__init__(f"{step}: {cause}")


# what a request that asks a job for a state it cannot take is told, by that state
_WHY = {
    "canceled": "it cannot be canceled",
    "queued": "only a failed or canceled job can be retried",
}


class InvalidTransition(ServiceError):
    """A job cannot move from its state to the requested one; ``job`` is the job as it is."""

    def __init__(self, job_id: str, current: str, target: str, job: Job | None = None) -> None:
        self.job_id = job_id
        self.current = current
        self.target = target
        self.job = job
        why = _WHY.get(str(target), f"it cannot become {target}")
        super().__init__(f"job {job_id} is {current}; {why}")


class PoolClosed(ServiceError):
    """The worker pool is shutting down and takes no more jobs."""

    def __init__(self) -> None:
        super().__init__("the worker pool is closed")


class KeyTaken(ServiceError):
    """Another unfinished job holds this job's ``key``."""

    def __init__(self, job_id: str, key: str, holder_id: str) -> None:
        self.job_id = job_id
        self.key = key
        self.holder_id = holder_id
        super().__init__(f"job {holder_id} holds the key {key!r} until it finishes")


class UnknownDependencies(ServiceError):
    """A job would depend on jobs that do not exist (``index``: its place in a batch)."""

    def __init__(self, job_ids: list[str], index: int | None = None) -> None:
        self.job_ids = job_ids
        self.index = index
        where = "" if index is None else f"job {index} of the batch: "
        super().__init__(f"{where}depends_on names jobs that do not exist: {', '.join(job_ids)}")


class IdempotencyKeyReused(ServiceError):
    """An ``Idempotency-Key`` came back with a different request."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(
            f"the Idempotency-Key {key!r} was used within 24 h for a different request; "
            "use a new key for a new request"
        )


class ShuttingDown(ServiceError):
    """The service is draining before it stops: it takes no new jobs."""

    def __init__(self) -> None:
        super().__init__("the service is shutting down and takes no new jobs; submit again soon")


class RateLimited(ServiceError):
    """A client submits faster than CONVEYOR_SUBMIT_RATE allows."""

    def __init__(self, jobs_per_s: float, retry_after_s: float) -> None:
        self.jobs_per_s = jobs_per_s
        self.retry_after_s = retry_after_s
        super().__init__(
            f"more than {jobs_per_s:g} jobs a second (CONVEYOR_SUBMIT_RATE); "
            f"try again in {retry_after_s:.2f} s"
        )


class TooManyStreams(ServiceError):
    """As many event streams are open as the service allows."""

    def __init__(self, most: int) -> None:
        self.most = most
        super().__init__(
            f"{most} event streams are open, as many as CONVEYOR_MAX_STREAMS allows; "
            "try again soon, or follow fewer"
        )


class ScheduleNotFound(ServiceError):
    """No schedule has this id."""

    def __init__(self, schedule_id: str) -> None:
        self.schedule_id = schedule_id
        super().__init__(f"no schedule with id {schedule_id!r}")


class ScheduleConflict(ServiceError):
    """A schedule cannot be made or removed as asked (its id is taken, it is declared in code)."""

    def __init__(self, schedule_id: str, reason: str) -> None:
        self.schedule_id = schedule_id
        self.reason = reason
        super().__init__(f"schedule {schedule_id!r}: {reason}")

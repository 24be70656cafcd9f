"""What a finished job means to the code that waited for it: its result, or an exception."""

from __future__ import annotations

from typing import Any

from ..jobs import Job, JobState
from .errors import JobCanceled, JobFailed
from .records import WorkflowInfo


def outcome(job: Job) -> Any:
    """The result of the finished ``job``; JobFailed or JobCanceled if it has none."""
    if job.state is JobState.SUCCEEDED:
        return job.result
    if job.state is JobState.CANCELED:
        raise JobCanceled(job)
    raise JobFailed(job)


def workflow_outcome(info: WorkflowInfo) -> Any:
    """The result of the finished workflow ``info``; JobFailed for its failed job (or
    JobCanceled for its first canceled one) if it has none."""
    if info.state == "succeeded":
        return info.result
    failed = [job for job in info.jobs if job.state is JobState.FAILED]
    if failed:
        raise JobFailed(failed[0])
    return outcome(next(job for job in info.jobs if job.state is JobState.CANCELED))

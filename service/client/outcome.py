"""What a finished job means to the code that waited for it: its result, or an exception."""

from __future__ import annotations

from typing import Any

from ..jobs import Job, JobState
from .errors import JobCanceled, JobFailed


def outcome(job: Job) -> Any:
    """The result of the finished ``job``; JobFailed or JobCanceled if it has none."""
    if job.state is JobState.SUCCEEDED:
        return job.result
    if job.state is JobState.CANCELED:
        raise JobCanceled(job)
    raise JobFailed(job)

"""A job as JSON, both ways: what the API sends (``job_json``) and what a client reads back.

One home for the format, so the service and ``service.client`` cannot drift apart. Times are
ISO-8601 in UTC on the wire and epoch seconds in a ``Job``, as everywhere in the code.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .jobs import Attempt, Job, JobError, JobState, Progress, isoformat
from .options import JobOptions
from .workflows import Workflow, resolve, workflow_state


def job_json(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "task": job.task,
        "args": job.args,
        "kwargs": job.kwargs,
        "state": job.state.value,
        "progress": None if job.progress is None else job.progress.as_dict(),
        "result": job.result if job.state is JobState.SUCCEEDED else None,
        "error": None if job.error is None else job.error.as_dict(),
        "attempt": job.attempt,
        "key": job.key,
        "schedule_id": job.schedule_id,
        "options": job.options.as_dict(),
        "created_at": isoformat(job.created_at),
        "started_at": isoformat(job.started_at),
        "finished_at": isoformat(job.finished_at),
        "scheduled_at": isoformat(job.scheduled_at),
        "retries": job.retries,
        "attempts": [
            {
                **attempt.as_dict(),
                "started_at": isoformat(attempt.started_at),
                "finished_at": isoformat(attempt.finished_at),
            }
            for attempt in job.attempts
        ],
        "depends_on": list(job.depends_on),
        "on_dependency_failure": job.on_dependency_failure,
        "workflow_id": job.workflow_id,
    }


def workflow_json(workflow: Workflow) -> dict[str, Any]:
    """A workflow as the API shows it: its state, its jobs (upstream first), the edges
    between them (from a job to one that waits for it), and its result once it succeeded."""
    jobs = workflow.jobs
    state = workflow_state(jobs)
    results = {job.id: job.result for job in jobs}
    finished = [job.finished_at for job in jobs if job.finished_at is not None]
    return {
        "id": workflow.id,
        "state": state,
        "created_at": isoformat(workflow.created_at),
        "finished_at": isoformat(max(finished)) if state != "running" and finished else None,
        "result": resolve(workflow.output, results) if state == "succeeded" else None,
        "jobs": [job_json(job) for job in jobs],
        "edges": [{"from": other, "to": job.id} for job in jobs for other in job.depends_on],
    }


def job_from_json(body: dict[str, Any]) -> Job:
    """The ``Job`` a ``job_json`` body describes; KeyError or ValueError if it is not one."""
    return Job(
        id=body["id"],
        task=body["task"],
        args=body["args"],
        kwargs=body["kwargs"],
        state=JobState(body["state"]),
        created_at=epoch_s(body["created_at"]) or 0.0,
        attempt=body["attempt"],
        progress=progress_from_json(body["progress"]),
        result=body["result"],
        error=error_from_json(body["error"]),
        started_at=epoch_s(body["started_at"]),
        finished_at=epoch_s(body["finished_at"]),
        options=JobOptions.from_dict(body["options"]),
        scheduled_at=epoch_s(body["scheduled_at"]),
        retries=body["retries"],
        attempts=tuple(_attempt_from_json(a) for a in body["attempts"]),
        key=body["key"],
        schedule_id=body.get("schedule_id"),  # absent from a service older than schedule ids
        depends_on=tuple(body.get("depends_on", ())),  # and than dependencies
        on_dependency_failure=body.get("on_dependency_failure", "cancel"),
        workflow_id=body.get("workflow_id"),
    )


def progress_from_json(body: dict[str, Any] | None) -> Progress | None:
    if body is None:
        return None
    return Progress(body["done"], body.get("total"), body.get("message"))


def error_from_json(body: dict[str, Any] | None) -> JobError | None:
    if body is None:
        return None
    return JobError(body["type"], body["message"], body.get("traceback"))


def _attempt_from_json(body: dict[str, Any]) -> Attempt:
    return Attempt(
        number=body["number"],
        started_at=epoch_s(body["started_at"]),
        finished_at=epoch_s(body["finished_at"]) or 0.0,
        outcome=body["outcome"],
        error=error_from_json(body.get("error")),
    )


def epoch_s(text: str | None) -> float | None:
    """Epoch seconds of an ISO-8601 time as ``isoformat`` writes it; None stays None."""
    return None if text is None else datetime.fromisoformat(text).timestamp()

"""Jobs, schedules and events as the rows both backends store: JSON as text, times as epoch
seconds. A row's columns come in the order of ``JOB_COLUMNS`` / ``SCHEDULE_COLUMNS``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from ..cron import Schedule
from ..jobs import Attempt, Event, Job, JobError, JobState, Progress
from ..options import JobOptions

JOB_COLUMNS = (
    "id, task, args, kwargs, state, attempt, interruptions, progress, result, error, "
    "created_at, started_at, finished_at, seq, options, scheduled_at, retries, attempts, key, "
    "schedule_id, depends_on, on_dependency_failure, waiting_on, input, workflow_id"
)
SCHEDULE_COLUMNS = (
    "id, task, cron, args, kwargs, options, source, created_at, last_tick_at, paused, resumed_at"
)


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def job_to_row(job: Job) -> tuple[Any, ...]:
    return (
        job.id, job.task, dumps(job.args), dumps(job.kwargs), job.state.value, job.attempt,
        job.interruptions,
        None if job.progress is None else dumps(job.progress.as_dict()),
        None if job.state is not JobState.SUCCEEDED else dumps(job.result),
        None if job.error is None else dumps(job.error.as_dict()),
        job.created_at, job.started_at, job.finished_at, dumps(job.options.as_dict()),
        job.scheduled_at, job.retries, dumps([a.as_dict() for a in job.attempts]), job.key,
        job.schedule_id, dumps(job.depends_on), job.on_dependency_failure, job.waiting_on,
        None if job.input is None else dumps(job.input), job.workflow_id,
    )  # fmt: skip


def update_params(job: Job) -> tuple[Any, ...]:
    row = job_to_row(job)
    # the key, schedule, dependencies and workflow never change; the arguments do once, when
    # a workflow's step takes its input
    return (row[2], *row[4:10], *row[11:13], *row[14:17], job.waiting_on, job.id)


def row_to_job(row: Sequence[Any]) -> Job:
    progress = None if row[7] is None else Progress(**orjson.loads(row[7]))
    error = None if row[9] is None else JobError(**orjson.loads(row[9]))
    return Job(
        id=row[0], task=row[1], args=orjson.loads(row[2]), kwargs=orjson.loads(row[3]),
        state=JobState(row[4]), attempt=row[5], interruptions=row[6], progress=progress,
        result=None if row[8] is None else orjson.loads(row[8]), error=error,
        created_at=row[10], started_at=row[11], finished_at=row[12],
        options=JobOptions.from_dict(orjson.loads(row[14])), scheduled_at=row[15],
        retries=row[16], attempts=tuple(Attempt.from_dict(a) for a in orjson.loads(row[17])),
        key=row[18], schedule_id=row[19], depends_on=tuple(orjson.loads(row[20])),
        on_dependency_failure=row[21], waiting_on=row[22],
        input=None if row[23] is None else orjson.loads(row[23]), workflow_id=row[24],
    )  # fmt: skip


def schedule_to_row(schedule: Schedule) -> tuple[Any, ...]:
    return (
        schedule.id, schedule.task, schedule.cron, dumps(schedule.args), dumps(schedule.kwargs),
        dumps(schedule.options.as_dict()), schedule.source, schedule.created_at,
        schedule.last_tick_at, int(schedule.paused), schedule.resumed_at,
    )  # fmt: skip


def row_to_schedule(row: Sequence[Any]) -> Schedule:
    return Schedule(
        id=row[0], task=row[1], cron=row[2], args=orjson.loads(row[3]),
        kwargs=orjson.loads(row[4]), options=JobOptions.from_dict(orjson.loads(row[5])),
        source=row[6], created_at=row[7], last_tick_at=row[8], paused=bool(row[9]),
        resumed_at=row[10],
    )  # fmt: skip


def row_to_event(row: Sequence[Any]) -> Event:
    return Event(id=row[0], job_id=row[1], kind=row[2], at=row[3], data=orjson.loads(row[4]))

"""The records the API answers with besides jobs (``service.jobs.Job``): tasks, schedules,
logs, list pages; each read from its JSON in one function."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..jobs import Job
from ..logs import LogEntry
from ..options import JobOptions
from ..wire import epoch_s, job_from_json
from .events import log_entry


@dataclass(frozen=True, slots=True)
class Submitted:
    """A submit's answer: the job, and whether this submit made it (False: its ``key`` or its
    ``Idempotency-Key`` named a job that was there already)."""

    job: Job
    created: bool


@dataclass(frozen=True, slots=True)
class JobsPage:
    jobs: tuple[Job, ...]
    next_cursor: str | None  # None on the last page


@dataclass(frozen=True, slots=True)
class Logs:
    job_id: str
    entries: tuple[LogEntry, ...]
    dropped: int  # older lines the store no longer keeps


@dataclass(frozen=True, slots=True)
class TaskParam:
    name: str
    kind: str  # "positional_or_keyword", "keyword_only", "var_positional", ...
    type: str | None  # the annotation as text
    required: bool
    default: Any = None
    has_default: bool = False  # a default that JSON can show


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """A task the service serves, as ``GET /tasks`` describes it."""

    name: str
    doc: str | None
    is_async: bool
    options: JobOptions
    concurrency: int | None
    cron: str | None
    params: tuple[TaskParam, ...] = field(default_factory=tuple)
    data: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)  # as sent


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A schedule, as ``GET /schedules/<id>`` describes it; times in epoch seconds."""

    id: str
    task: str
    cron: str
    timezone: str
    args: list[Any]
    kwargs: dict[str, Any]
    options: JobOptions
    source: str  # "api" or "task" (declared with @task(cron=...))
    created_at: float
    last_run_at: float | None
    next_run_at: float | None  # None while paused
    paused: bool  # makes no jobs until resumed
    data: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)  # as sent


def submitted(body: dict[str, Any], status: int) -> Submitted:
    return Submitted(job_from_json(body), status == 202)


def jobs_page(body: dict[str, Any]) -> JobsPage:
    return JobsPage(tuple(job_from_json(j) for j in body["jobs"]), body.get("next"))


def logs(body: dict[str, Any]) -> Logs:
    entries = tuple(log_entry(e) for e in body["entries"])
    return Logs(body["job_id"], entries, body.get("dropped", 0))


def task_info(body: dict[str, Any]) -> TaskInfo:
    params = tuple(
        TaskParam(
            p["name"], p["kind"], p.get("type"), p["required"], p.get("default"), "default" in p
        )
        for p in body.get("params", ())
    )
    return TaskInfo(
        body["name"], body.get("doc"), body.get("is_async", False),
        JobOptions.from_dict(body.get("options") or {}), body.get("concurrency"),
        body.get("cron"), params, body,
    )  # fmt: skip


def schedule_info(body: dict[str, Any]) -> ScheduleInfo:
    return ScheduleInfo(
        body["id"], body["task"], body["cron"], body["timezone"], body["args"], body["kwargs"],
        JobOptions.from_dict(body.get("options") or {}), body["source"],
        epoch_s(body["created_at"]) or 0.0, epoch_s(body.get("last_run_at")),
        epoch_s(body.get("next_run_at")), bool(body.get("paused", False)), body,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class WorkflowInfo:
    """A workflow as ``GET /workflows/<id>`` shows it."""

    id: str
    state: str  # running, succeeded, failed or canceled
    created_at: float
    finished_at: float | None
    result: Any  # once succeeded
    jobs: list[Job]  # upstream first
    edges: list[tuple[str, str]]  # (a job, one that waits for it)
    raw: dict[str, Any]

    @property
    def is_finished(self) -> bool:
        return self.state != "running"


def workflow_info(body: dict[str, Any]) -> WorkflowInfo:
    return WorkflowInfo(
        body["id"], body["state"], epoch_s(body["created_at"]) or 0.0,
        epoch_s(body.get("finished_at")), body.get("result"),
        [job_from_json(job) for job in body["jobs"]],
        [(edge["from"], edge["to"]) for edge in body["edges"]], body,
    )  # fmt: skip

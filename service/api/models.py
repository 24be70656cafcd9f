"""What every route answers, as models for ``/openapi.json``.

The routes send ready JSON (``service.wire``, ``Reads``): these models only describe it, and
the tests hold the two together by checking real answers against the document. ``extra`` is
forbidden so that a field added to an answer and not here fails those checks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from quart_schema import document_response

Time = str  # ISO-8601 in UTC with milliseconds, e.g. 2026-11-21T10:49:00.123Z
State = Literal["waiting", "scheduled", "queued", "running", "succeeded", "failed", "canceled"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FieldProblem(Model):
    field: str
    message: str


class Error(Model):
    """Every error: a stable code, a sentence for people, and what says more."""

    model_config = ConfigDict(extra="allow")  # state, job, task, key, index...
    error: str = Field(description="a stable code, e.g. not_found, invalid_request")
    detail: str = Field(description="what is wrong, for people")
    fields: list[FieldProblem] | None = Field(None, description="each field's problem")


class Progress(Model):
    done: float
    total: float | None
    message: str | None


class JobError(Model):
    type: str = Field(description="the exception's type name, e.g. ValueError, Timeout")
    message: str
    traceback: str | None


class Options(Model):
    timeout_s: float | None
    soft_timeout_s: float | None
    max_retries: int | None
    retry_backoff_s: float | None
    retry_backoff_max_s: float | None
    retry_on: list[str] | None
    priority: int | None
    queue: str | None
    memory_limit_mb: int | None
    rate_limit: str | None


class Attempt(Model):
    number: int
    started_at: Time | None
    finished_at: Time
    outcome: str = Field(description="the state it led to, or retried, interrupted")
    error: JobError | None


class Job(Model):
    id: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    state: State
    progress: Progress | None = Field(description="null until the job reports progress")
    result: Any = Field(description="what the task returned, once it has succeeded")
    error: JobError | None
    attempt: int = Field(description="how many times it has started")
    key: str | None
    schedule_id: str | None = Field(description="the schedule whose tick made it; null if not")
    options: Options
    created_at: Time
    started_at: Time | None
    finished_at: Time | None
    scheduled_at: Time | None
    retries: int
    attempts: list[Attempt] = Field(description="every run that ended, oldest first")
    depends_on: list[str] = Field(description="the jobs it waits for (waiting) until they succeed")
    on_dependency_failure: Literal["cancel", "run"] = Field(
        description="what it does when one of them fails or is canceled"
    )
    workflow_id: str | None = Field(description="the workflow it is a step of; null if none")


class Edge(Model):
    from_: str = Field(alias="from", description="a job")
    to: str = Field(description="a job that waits for it")


class Workflow(Model):
    id: str
    state: Literal["running", "succeeded", "failed", "canceled"] = Field(
        description="running while a job is unfinished; then succeeded if all did, failed if "
        "one failed (the jobs after it are canceled for it), else canceled"
    )
    created_at: Time
    finished_at: Time | None
    result: Any = Field(
        description="once succeeded: the chain's last output, a group's list of outputs, "
        "or its callback's"
    )
    jobs: list[Job] = Field(description="its jobs, each after the jobs it waits for")
    edges: list[Edge]


class JobFields(Model):
    """A job with only the fields ``?fields=`` asked for (and its id)."""

    id: str
    task: str | None = None
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None
    state: State | None = None
    progress: Progress | None = None
    result: Any = None
    error: JobError | None = None
    attempt: int | None = None
    key: str | None = None
    schedule_id: str | None = None
    options: Options | None = None
    created_at: Time | None = None
    started_at: Time | None = None
    finished_at: Time | None = None
    scheduled_at: Time | None = None
    retries: int | None = None
    attempts: list[Attempt] | None = None
    depends_on: list[str] | None = None
    on_dependency_failure: Literal["cancel", "run"] | None = None
    workflow_id: str | None = None


class JobPage(Model):
    jobs: list[Job | JobFields] = Field(description="each job, or the fields ?fields= asks for")
    next: str | None = Field(description="the cursor of the next page; null on the last")


class Batch(Model):
    jobs: list[Job]


class LogEntry(Model):
    at: Time
    stream: str = Field(description="stdout, stderr or log")
    text: str
    level: str | None = None
    logger: str | None = None
    attempt: int | None = None


class Logs(Model):
    job_id: str
    entries: list[LogEntry]
    dropped: int = Field(description="older entries no longer kept")


class TaskParam(Model):
    name: str
    kind: str
    type: str | None
    required: bool
    default: Any = None


class Task(Model):
    name: str
    doc: str | None
    is_async: bool
    options: Options
    concurrency: int | None
    cron: str | None
    params: list[TaskParam]
    held_by_rate: int = Field(
        description="its due jobs that its rate limit (or their queue's) holds back now"
    )


class Tasks(Model):
    tasks: list[Task]


class Schedule(Model):
    id: str
    task: str
    cron: str
    timezone: str
    args: list[Any]
    kwargs: dict[str, Any]
    options: Options
    source: Literal["api", "task"]
    paused: bool = Field(description="a paused schedule makes no jobs until it is resumed")
    created_at: Time
    last_run_at: Time | None
    next_run_at: Time | None


class Schedules(Model):
    schedules: list[Schedule]


class Bucket(Model):
    at: Time
    canceled: int
    failed: int
    succeeded: int


class Throughput(Model):
    bucket_s: int
    window_s: int
    buckets: list[Bucket]


class Stats(Model):
    event_id: int = Field(description="the events after this one change these counts")
    total: int
    by_state: dict[str, int]
    by_queue: dict[str, dict[str, int]]
    throughput: Throughput


class WorkerJob(Model):
    id: str
    task: str
    started_at: Time | None
    progress: Progress | None


class Worker(Model):
    pid: int
    state: Literal["busy", "idle", "starting"]
    started_at: Time | None
    jobs_run: int
    service: str | None = Field(
        description="with PostgreSQL, the service whose worker it is (services share the "
        "database); null with SQLite"
    )
    service_at: str | None = Field(
        description="with PostgreSQL, where that service runs: its host and process id "
        "(`host:pid`); null with SQLite"
    )
    job: WorkerJob | None


class Workers(Model):
    size: int
    busy: int
    idle: int
    workers: list[Worker]


class StartError(Model):
    type: str | None
    message: str | None
    traceback: str | None


class PoolWorker(Model):
    pid: int
    job_id: str | None = Field(description="shown only with the token")
    ready: bool
    jobs_run: int
    started_at: Time | None


class Recycled(Model):
    jobs: int
    memory: int


class PoolHealth(Model):
    size: int
    alive: int
    busy: int
    workers: list[PoolWorker] | None = Field(None, description="only with the token")
    recycled: Recycled
    last_start_error: str | None
    start_error: StartError | None


class DatabaseHealth(Model):
    ok: bool
    error: str | None = None


class JobCounts(Model):
    queued: int
    running: int
    queued_by_queue: dict[str, int]


class Health(Model):
    status: Literal["ok", "degraded", "draining"]
    database: DatabaseHealth
    workers: PoolHealth
    jobs: JobCounts


class Ready(Model):
    ready: bool
    problems: list[str] = Field(description="why not, each a sentence; empty when ready")


class StreamToken(Model):
    token: str = Field(description="put it in a stream's ?token= (an EventSource sends no headers)")
    expires_in_s: int
    scope: Literal["read", "write"] = Field(description="what the token it came from may do")


# -- the event streams: ``data:`` of each event type (``job_id`` and ``at`` on every one) -----


class EventError(Model):
    type: str
    message: str


class StateEvent(Model):
    """``event: state``: a job moved from one state to another."""

    job_id: str
    at: Time
    task: str
    queue: str
    from_: State | None = Field(alias="from", description="the state it left; null: a new job")
    state: State
    attempt: int
    error: EventError | None = None


class ProgressEvent(Model):
    """``event: progress``: a running job reported how far it is."""

    job_id: str
    at: Time
    task: str
    progress: Progress | None


class LogEvent(Model):
    """``event: log``: lines a running job wrote."""

    job_id: str
    at: Time
    task: str
    entries: list[LogEntry]
    dropped: int


class PrunedCount(Model):
    queue: str
    state: State
    jobs: int


class PrunedEvent(Model):
    """``event: pruned``: finished jobs past CONVEYOR_RETENTION_S were removed (``job_id`` is
    empty: the event is about the store)."""

    job_id: str
    at: Time
    removed: list[PrunedCount]


class EventStream(Model):
    """Server-Sent Events (``text/event-stream``); ``service.api.docs`` writes its content."""


# -- which route answers what ------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])

# every route: a query parameter it does not take (400), no token (401, with CONVEYOR_TOKEN set)
EVERY_ROUTE = (400, 401)


def answers(ok: dict[int, type[BaseModel] | None], *errors: int) -> Callable[[F], F]:
    """Document what a route answers: its successes (None: an empty body) and the error
    statuses it can answer besides ``EVERY_ROUTE``, each with the ``Error`` body."""

    def document(view: F) -> F:
        for status, model in ok.items():
            view = document_response(model or Empty, status)(view)
        for status in sorted({*EVERY_ROUTE, *errors}):
            view = document_response(Error, status)(view)
        return view

    return document


class Empty(Model):
    """No body (204)."""

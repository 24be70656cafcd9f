"""The HTTP API's request models (validated by pydantic) and the schedule as JSON.

The job's JSON lives in ``wire``, which clients share.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .cron import MAX_CRON_LENGTH, Schedule, check_cron
from .errors import UnsafeText
from .jobs import MAX_DEPENDENCIES, DependencyFailure, Job, JobSpec, JobState, isoformat
from .options import MAX_ERROR_TYPE_CHARS, RULES, JobOptions
from .settings import MAX_LOG_LINES
from .wire import job_json
from .workflows import Chain, Group, Node, Step

MAX_JOBS_PER_BATCH = 1000
JOB_FIELDS = frozenset(job_json(Job("", "", [], {}, JobState.QUEUED, 0.0)))  # what a job sends
# orjson writes at most 254 levels; a job's arguments travel inside a few more (the worker
# message, a batch response), so deeper nesting is refused at the door instead of breaking later
MAX_ARGUMENT_DEPTH = 64
MAX_ID = 2**63 - 1  # cursors and event ids are SQLite integers
MAX_ID_DIGITS = len(str(MAX_ID))
MAX_DELAY_S = 100 * 365 * 24 * 3600.0
MAX_KEY_CHARS = 200
SCHEDULE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"  # safe in a URL; never "task:…"
LATEST_TIME = datetime(9999, 12, 31, tzinfo=UTC).timestamp()  # the last that ISO-8601 shows


def json_depth(value: Any) -> int:
    """How deep lists and objects nest in ``value`` (a scalar is 0); iterative, so unbounded."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, list | dict):
            depth += 1
            deepest = max(deepest, depth)
            stack.extend(
                (child, depth) for child in (item.values() if isinstance(item, dict) else item)
            )
    return deepest


def _option(name: str) -> Any:
    """The request field of one job option: its bounds and description from its rule."""
    rule = RULES[name]
    return Field(None, description=rule.description, **rule.bounds())


class JobOptionFields(BaseModel):
    """The per-job options: on ``POST /jobs``, and on requests that make jobs later."""

    model_config = ConfigDict(extra="forbid", strict=True)
    timeout_s: float | None = _option("timeout_s")
    soft_timeout_s: float | None = _option("soft_timeout_s")
    max_retries: int | None = _option("max_retries")
    retry_backoff_s: float | None = _option("retry_backoff_s")
    retry_backoff_max_s: float | None = _option("retry_backoff_max_s")
    retry_on: list[Annotated[str, Field(min_length=1, max_length=MAX_ERROR_TYPE_CHARS)]] | None = (
        _option("retry_on")
    )
    priority: int | None = _option("priority")
    queue: str | None = _option("queue")
    memory_limit_mb: int | None = _option("memory_limit_mb")
    rate_limit: str | None = _option("rate_limit")

    @field_validator(*RULES)
    @classmethod
    def _by_its_rule(cls, value: Any, info: ValidationInfo) -> Any:
        rule = RULES[str(info.field_name)]
        if value is not None and not rule.allows(value):
            raise ValueError(f"must be {rule.expects()}")
        return value

    def job_options(self) -> JobOptions:
        """The options given; those left out come from the task when a job is made."""
        return JobOptions(
            timeout_s=self.timeout_s, soft_timeout_s=self.soft_timeout_s,
            max_retries=self.max_retries, retry_backoff_s=self.retry_backoff_s,
            retry_backoff_max_s=self.retry_backoff_max_s,
            retry_on=None if self.retry_on is None else tuple(self.retry_on),
            priority=self.priority, queue=self.queue, memory_limit_mb=self.memory_limit_mb,
            rate_limit=self.rate_limit,
        )  # fmt: skip


class TaskCall(JobOptionFields):
    """A task with its arguments and options."""

    task: str = Field(min_length=1, max_length=200)
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("args", "kwargs")
    @classmethod
    def _not_too_deep(cls, value: Any) -> Any:
        if json_depth(value) > MAX_ARGUMENT_DEPTH:
            raise ValueError(f"nests deeper than {MAX_ARGUMENT_DEPTH} levels")
        return value


class SubmitJob(TaskCall):
    """``POST /jobs``: which task to run, with which arguments, when, and how."""

    delay_s: float | None = Field(
        None, ge=0, le=MAX_DELAY_S, description="run no sooner than this from now"
    )
    run_at: str | None = Field(None, description="run no sooner than this ISO-8601 time")
    key: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_KEY_CHARS,
        description="while a job with this key is unfinished, submitting it again returns it",
    )
    depends_on: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list,
        max_length=MAX_DEPENDENCIES,
        description="ids of jobs that must succeed first: until then the job is waiting",
    )
    on_dependency_failure: DependencyFailure = Field(
        "cancel",
        description="one of them failed or was canceled: cancel this job too (dependency_failed), "
        "or run it anyway once they have all finished",
    )

    @field_validator("key")
    @classmethod
    def _shown_as_written(cls, value: str | None) -> str | None:
        if value is not None:
            refuse_hidden_characters("key", value)
        return value

    @field_validator("run_at")
    @classmethod
    def _a_time(cls, value: str | None) -> str | None:
        if value is not None:
            parse_time(value)
        return value

    @model_validator(mode="after")
    def _one_start(self) -> SubmitJob:
        if self.delay_s is not None and self.run_at is not None:
            raise ValueError("give delay_s or run_at, not both")
        return self

    def spec(self, now: float) -> JobSpec:
        """What to create; options the request leaves out come from the task."""
        if self.delay_s is not None:
            run_at: float | None = now + self.delay_s
        else:
            run_at = None if self.run_at is None else parse_time(self.run_at)
        return JobSpec(
            self.task, self.args, self.kwargs, self.job_options(), run_at, self.key,
            depends_on=tuple(self.depends_on), on_dependency_failure=self.on_dependency_failure,
        )  # fmt: skip


class WorkflowStep(TaskCall):
    """One task call of a workflow."""

    pass_result: bool = Field(
        True,
        description="take the output of the steps before it as its first argument (false: "
        "run with its own arguments only)",
    )
    delay_s: float | None = Field(
        None, ge=0, le=MAX_DELAY_S,
        description="run no sooner than this after the workflow is made (and the steps before)",
    )  # fmt: skip

    def step(self, now: float) -> Step:
        run_at = None if self.delay_s is None else now + self.delay_s
        spec = JobSpec(self.task, self.args, self.kwargs, self.job_options(), run_at)
        return Step(spec, self.pass_result)


def _kind_of_step(value: Any) -> str:
    """A step is a flow when it says chain or group, else a task call."""
    if isinstance(value, dict) and ("chain" in value or "group" in value):
        return "flow"
    if isinstance(value, Flow):
        return "flow"
    return "task"


class Flow(BaseModel):
    """A chain (each step after the one before, taking its output) or a group (side by side,
    with an optional callback, ``then``, that takes their outputs as a list)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    chain: Steps | None = Field(None, min_length=1, description="steps run one after another")
    group: Steps | None = Field(None, min_length=1, description="steps run side by side")
    then: AnyStep | None = Field(
        None, description="with a group: the step that takes the list of their outputs"
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Flow:
        if (self.chain is None) == (self.group is None):
            raise ValueError("give chain or group, not both")
        if self.then is not None and self.group is None:
            raise ValueError("then goes with a group")
        return self

    def node(self, now: float) -> Node:
        """The workflow this describes (see ``service.workflows``)."""

        def each(step: Flow | WorkflowStep) -> Node:
            return step.node(now) if isinstance(step, Flow) else step.step(now)

        if self.chain is not None:
            return Chain(tuple(each(step) for step in self.chain))
        assert self.group is not None
        then = None if self.then is None else each(self.then)
        return Group(tuple(each(step) for step in self.group), then)


# a step: a flow when it says chain or group, else a task call
AnyStep = Annotated[
    Annotated[Flow, Tag("flow")] | Annotated[WorkflowStep, Tag("task")],
    Discriminator(_kind_of_step),
]
Steps = list[AnyStep]


def count_steps(node: Node) -> int:
    """How many jobs ``node`` makes."""
    match node:
        case Step():
            return 1
        case Chain(steps):
            return sum(count_steps(step) for step in steps)
        case Group(members, then):
            return sum(count_steps(m) for m in members) + (0 if then is None else count_steps(then))


class CreateSchedule(TaskCall):
    """``POST /schedules``: run a task at every tick of a cron expression."""

    id: str | None = Field(
        None, pattern=SCHEDULE_ID_PATTERN, description="letters, digits, '.', '_', '-' (1-100)"
    )
    cron: str = Field(
        min_length=1,
        max_length=MAX_CRON_LENGTH,
        description="5 fields (minute hour day month weekday), 6 with seconds first, or @hourly…",
    )

    @field_validator("cron")
    @classmethod
    def _a_cron(cls, value: str) -> str:
        return check_cron(value)


class SubmitJobs(BaseModel):
    """``POST /jobs/batch``: several jobs, created together or not at all."""

    model_config = ConfigDict(extra="forbid", strict=True)
    jobs: list[SubmitJob] = Field(min_length=1, max_length=MAX_JOBS_PER_BATCH)


class IdempotencyHeaders(BaseModel):
    """A submit's headers."""

    idempotency_key: str | None = Field(
        None,
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="a retried request with this key (within 24 h) returns the first one's job(s)",
    )


class WaitQuery(BaseModel):
    """``?wait_s=``: answer once the job has finished, or after this long (at most
    CONVEYOR_MAX_WAIT_S), with the job as it stands."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    wait_s: float | None = Field(
        None, ge=0, allow_inf_nan=False,
        description="wait this long at most for the job to finish (capped by CONVEYOR_MAX_WAIT_S)",
    )  # fmt: skip


class StreamQuery(BaseModel):
    """An event stream's query: where to resume, and a stream token for an ``EventSource``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    last_event_id: str | None = Field(
        None, description="resume after this event id (as the Last-Event-ID header does)"
    )
    token: str | None = Field(None, description="a token from POST /stream-token")


class LogsQuery(BaseModel):
    """``GET /jobs/<id>/logs``: how much of the log."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tail: int | None = Field(None, ge=1, le=MAX_LOG_LINES, description="only the last N entries")


class JobsQuery(BaseModel):
    """``GET /jobs``: filters and the page."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    state: str | None = Field(None, description="comma-separated states")
    task: str | None = None
    queue: str | None = None
    q: str | None = Field(
        None, max_length=200, description="text the arguments hold (ASCII case ignored)"
    )
    schedule: str | None = Field(None, description="only the jobs this schedule's ticks made")
    limit: int = Field(50, ge=1, le=1000)
    cursor: str | None = Field(None, description="'next' of the previous page")
    fields: str | None = Field(
        None,
        description="comma-separated fields of each job to send (id always), e.g. "
        "'task,state,created_at': leaves out the arguments, results and errors",
    )

    def job_fields(self) -> frozenset[str] | None:
        """The fields asked for (with ``id``); None for all; ValueError naming an unknown one."""
        if self.fields is None:
            return None
        names = {name.strip() for name in self.fields.split(",") if name.strip()}
        unknown = sorted(names - JOB_FIELDS)
        if unknown:
            known = ", ".join(sorted(JOB_FIELDS))
            raise ValueError(f"fields: unknown field(s) {', '.join(unknown)}; known: {known}")
        return frozenset({"id", *names})

    def states(self) -> list[JobState]:
        """The states asked for; ValueError naming an unknown one."""
        states = []
        for name in (self.state or "").split(","):
            if name.strip():
                try:
                    states.append(JobState(name.strip()))
                except ValueError:
                    known = ", ".join(s.value for s in JobState)
                    raise ValueError(f"state: unknown state {name!r}; known: {known}") from None
        return states

    def before(self) -> int | None:
        """The cursor as a position; ValueError if it is not one this API gave out."""
        if self.cursor is None:
            return None
        position = parse_id(self.cursor)
        if position is None:
            raise ValueError("cursor: not a cursor from 'next'")
        return position


def refuse_hidden_characters(field: str, text: str) -> None:
    """UnsafeText (a 422) if ``text`` holds characters that do not show as what they are: a
    control, or a format character such as a bidirectional override, which makes a key read
    differently from what it is (``"job\u202egpj.exe"`` shows as ``"jobexe.jpg"``)."""
    for char in text:
        if unicodedata.category(char) in ("Cc", "Cf"):
            raise UnsafeText(field, char)


def parse_time(text: str) -> float:
    """Epoch seconds of an ISO-8601 time (UTC when it names no zone); ValueError if not one."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO-8601 time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if moment.timestamp() > LATEST_TIME:
        raise ValueError(f"{text!r} is past the year 9999")
    return moment.timestamp()


def parse_id(text: str) -> int | None:
    """A non-negative integer id as text, or None: ASCII digits only, within SQLite's range."""
    text = text.strip()
    # the length first: int() of thousands of digits is slow, and past 4,300 an error
    if len(text) > MAX_ID_DIGITS or not (text.isascii() and text.isdigit()) or int(text) > MAX_ID:
        return None
    return int(text)


def schedule_json(
    schedule: Schedule, *, next_run_at: float | None, timezone: str
) -> dict[str, Any]:
    return {
        "id": schedule.id,
        "task": schedule.task,
        "cron": schedule.cron,
        "timezone": timezone,
        "args": schedule.args,
        "kwargs": schedule.kwargs,
        "options": schedule.options.as_dict(),
        "source": schedule.source,
        "paused": schedule.paused,
        "created_at": isoformat(schedule.created_at),
        "last_run_at": isoformat(schedule.last_tick_at),
        "next_run_at": isoformat(next_run_at),
    }


Flow.model_rebuild()  # it names itself: its steps may be flows

"""What a submit asks for besides the task's own arguments: the job's options, its start, its
``key`` and the request's ``Idempotency-Key``; and ``TaskCall``, one job of a batch.

Kept apart from the task's arguments, so that a task may have a parameter called ``priority``
or ``key`` and still be given both. A job option outside its rule (``service.options.RULES``,
the service's own) is refused here, before anything is sent; the service checks the rest.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, TypedDict

from typing_extensions import Unpack

from ..options import JobOptions
from .errors import RequestError


def type_name(error_type: str | type[BaseException]) -> str:
    """An error type as ``retry_on`` names it: ``ConnectionError`` or ``"HTTPStatusError"``."""
    return error_type if isinstance(error_type, str) else error_type.__qualname__


@dataclass(frozen=True, slots=True)
class SubmitOptions:
    """Options of a submit; what is left None comes from the task (or is not asked for)."""

    job: JobOptions = field(default_factory=JobOptions)
    delay_s: float | None = None  # run no sooner than this from now
    run_at: datetime | str | None = None  # run no sooner than this; naive: local time
    key: str | None = None  # while a job with this key is unfinished, a submit returns it
    idempotency_key: str | None = None  # a retried request returns the first one's job(s)
    depends_on: tuple[str, ...] | None = None  # jobs that must succeed first
    on_dependency_failure: Literal["cancel", "run"] | None = None  # one of them did not

    def merged(self, other: SubmitOptions) -> SubmitOptions:
        """These options with every value ``other`` sets put in their place."""
        if other == NO_OPTIONS:  # the common case, once per submit: skip the copying
            return self
        if self == NO_OPTIONS:
            return other
        changes = {
            f.name: getattr(other, f.name)
            for f in dataclasses.fields(other)
            if f.name != "job" and getattr(other, f.name) is not None
        }
        return dataclasses.replace(self, job=self.job.merged(other.job), **changes)

    def body(self) -> dict[str, Any]:
        """The fields of a ``POST /jobs`` body these options set."""
        fields = {k: v for k, v in self.job.as_dict().items() if v is not None}
        for name, value in (*fields.items(), ("delay_s", self.delay_s)):
            if isinstance(value, float) and not math.isfinite(value):
                # JSON has no NaN nor infinity: sent, it would arrive as null, silently unset
                raise RequestError(f"{name} must be a finite number, got {value!r}")
        if self.delay_s is not None:
            fields["delay_s"] = self.delay_s
        if self.run_at is not None:
            fields["run_at"] = _iso(self.run_at)
        if self.key is not None:
            fields["key"] = self.key
        if self.depends_on is not None:
            fields["depends_on"] = list(self.depends_on)
        if self.on_dependency_failure is not None:
            fields["on_dependency_failure"] = self.on_dependency_failure
        return fields


NO_OPTIONS = SubmitOptions()


class OptionFields(TypedDict, total=False):
    """The names a submit's options go by, as in ``POST /jobs``: one list for every method
    that takes them (``with_options``, ``TaskCall.with_options``, ``@task``'s ``with_options``)."""

    priority: int
    queue: str
    delay_s: float
    run_at: datetime | str
    timeout_s: float
    soft_timeout_s: float
    max_retries: int
    retry_backoff_s: float
    retry_backoff_max_s: float
    retry_on: Iterable[str | type[BaseException]]
    memory_limit_mb: int
    rate_limit: str  # "100/m": the task's jobs start at most this often
    key: str
    idempotency_key: str
    depends_on: Iterable[str | HasId]  # job ids, or the handles submit returned
    on_dependency_failure: Literal["cancel", "run"]


class HasId(Protocol):
    @property
    def id(self) -> str: ...


SUBMIT_ONLY = (
    "delay_s", "run_at", "key", "idempotency_key", "depends_on", "on_dependency_failure"
)  # fmt: skip


def submit_options(**options: Unpack[OptionFields]) -> SubmitOptions:
    """``SubmitOptions`` from the names the API uses; TypeError for a name it does not know."""
    unknown = set(options) - set(OptionFields.__annotations__)
    if unknown:
        raise TypeError(f"unknown submit option(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = dict(options)
    retry_on = values.pop("retry_on", None)
    submit = {name: values.pop(name) for name in SUBMIT_ONLY if name in values}
    if retry_on is not None:
        values["retry_on"] = tuple(type_name(t) for t in retry_on)
    key = submit.get("idempotency_key")
    if key is not None and not (key.isascii() and key.isprintable()):
        raise RequestError(f"idempotency_key must be printable ASCII (a header), got {key!r}")
    if "depends_on" in submit:
        submit["depends_on"] = tuple(
            job if isinstance(job, str) else job.id for job in submit["depends_on"]
        )
    job = JobOptions(**values)
    for name, expects in job.invalid():  # the service's own rule, so refused before sending
        raise RequestError(f"{name} must be {expects}, got {values[name]!r}")
    return SubmitOptions(job, **submit)


def _iso(moment: datetime | str) -> str:
    if isinstance(moment, str):
        return moment
    # a naive time is local time, as datetime.timestamp() reads it; the API reads naive as UTC
    return moment.astimezone().isoformat()


@dataclass(frozen=True, slots=True)
class TaskCall:
    """One job to submit: a task, its arguments and its own options (over the submitter's)."""

    task: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: SubmitOptions = field(default_factory=SubmitOptions)
    pass_result: bool = True  # in a workflow: take the steps before it's output first

    def without_input(self) -> TaskCall:
        """In a workflow, this step runs with its own arguments only: the output of the steps
        before it is not passed to it."""
        return dataclasses.replace(self, pass_result=False)

    def with_options(self, **options: Unpack[OptionFields]) -> TaskCall:
        """This call with these options set over its own (``idempotency_key`` belongs to the
        whole request: give it to the submitter)."""
        if "idempotency_key" in options:
            raise TypeError(
                "idempotency_key names a whole request: "
                "client.with_options(idempotency_key=...).submit_many(...)"
            )
        return dataclasses.replace(self, options=self.options.merged(submit_options(**options)))

    def body(self, options: SubmitOptions) -> dict[str, Any]:
        """The ``POST /jobs`` body of this call with these options (``options_over``)."""
        return {"task": self.task, "args": list(self.args), "kwargs": self.kwargs, **options.body()}

    def options_over(self, defaults: SubmitOptions) -> SubmitOptions:
        """This call's options over ``defaults`` (a submitter's): its own win."""
        return defaults.merged(self.options)


def call(task: str, /, *args: Any, **kwargs: Any) -> TaskCall:
    """A job for ``submit_many``: ``call("reports.build", 12, pages=40)``."""
    return TaskCall(task, args, kwargs)

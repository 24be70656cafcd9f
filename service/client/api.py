"""The API's requests and how to read their answers, with no I/O of its own.

``Client`` and ``AsyncClient`` differ only in how they send an ``Exchange`` and read a stream;
what to ask and what an answer means is said once, here (the sans-I/O split of hypercorn's
``protocol/``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
import orjson

from ..jobs import Job
from ..taskfn import TaskFunction
from ..wire import job_from_json
from . import records
from .errors import ApiError, ConnectionFailed, RequestError, api_error
from .options import OptionFields, SubmitOptions, TaskCall, submit_options

T = TypeVar("T")

JOBS_PAGE_SIZE = 100
MAX_JOBS_PER_BATCH = 1000  # what POST /jobs/batch takes at once


@dataclass(frozen=True, slots=True)
class Exchange(Generic[T]):
    """One request, and what its successful answer reads as."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    params: Mapping[str, str] | None = None
    body: Any = None  # JSON; None sends no body
    headers: Mapping[str, str] = field(default_factory=dict)
    also_read: frozenset[int] = frozenset()  # error statuses whose body is the answer too
    timeout: httpx.Timeout | None = None  # None: the client's own timeout_s

    def content(self) -> bytes | None:
        if self.body is None:
            return None
        try:
            return orjson.dumps(self.body)
        except TypeError as exc:  # a set, an object, an integer beyond 64 bits
            raise RequestError(f"the request cannot be sent as JSON: {exc}") from None

    def all_headers(self) -> dict[str, str]:
        extra = {} if self.body is None else {"Content-Type": "application/json"}
        return {**extra, **self.headers}

    def finish(self, response: httpx.Response) -> T:
        """The answer read, or the ``ApiError`` it stands for."""
        if not (response.is_success or response.status_code in self.also_read):
            raise error_of(response)
        try:
            return self.read(response)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # not Conveyor's
            raise unexpected(response, f"not an answer of Conveyor's API ({exc!r})") from None


def unexpected(response: httpx.Response, why: str) -> ApiError:
    return ApiError(response.status_code, "unexpected_response", why, {})


def error_of(response: httpx.Response) -> Exception:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:  # a proxy's page, say: its text is the best detail there is
        text = " ".join(response.text.split())  # on one line: it ends up in one
        body = {"detail": text[:200] or response.reason_phrase}
    return api_error(response.status_code, body, response.headers.get("Retry-After"))


def connection_failed(url: str, exc: httpx.TransportError) -> ConnectionFailed:
    return ConnectionFailed(url, str(exc) or type(exc).__name__)


def _json(response: httpx.Response) -> Any:
    return orjson.loads(response.content)


def _job(response: httpx.Response) -> Job:
    return job_from_json(_json(response))


def _no_content(response: httpx.Response) -> None:
    return None


def segment(text: str) -> str:
    """An id as one segment of a path."""
    if text in ("", ".", ".."):  # a URL would lose them: no job or schedule has such an id
        raise api_error(404, {"error": "not_found", "detail": f"no job or schedule {text!r}"})
    return quote(text, safe="")


def _idempotency(key: str | None) -> dict[str, str]:
    return {} if key is None else {"Idempotency-Key": key}


def submission(
    defaults: SubmitOptions, task: str | TaskFunction[Any, Any], args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Exchange[records.Submitted]:  # fmt: skip
    """``POST /jobs`` of ``task`` with these arguments, its own options over ``defaults``."""
    call = task_call(task, args, kwargs)
    options = call.options_over(defaults)
    return submit(call.body(options), options.idempotency_key)


def batch_submissions(
    defaults: SubmitOptions, calls: Iterable[TaskCall]
) -> list[Exchange[list[records.Submitted]]]:
    """``POST /jobs/batch`` requests of these calls, a thousand at most each."""
    bodies = [c.body(c.options_over(defaults)) for c in calls]
    return [submit_batch(chunk, key) for chunk, key in batches(bodies, defaults.idempotency_key)]


def submit(body: dict[str, Any], idempotency_key: str | None) -> Exchange[records.Submitted]:
    return Exchange(
        "POST", "/jobs", lambda r: records.submitted(_json(r), r.status_code),
        body=body, headers=_idempotency(idempotency_key),
    )  # fmt: skip


def submit_batch(
    bodies: list[dict[str, Any]], idempotency_key: str | None
) -> Exchange[list[records.Submitted]]:
    def read(response: httpx.Response) -> list[records.Submitted]:
        jobs = _json(response)["jobs"]
        # a 200 means every job was there already: this request was seen before
        return [records.Submitted(job_from_json(j), response.status_code == 202) for j in jobs]

    return Exchange(
        "POST", "/jobs/batch", read, body={"jobs": bodies}, headers=_idempotency(idempotency_key)
    )


def get_job(job_id: str) -> Exchange[Job]:
    return Exchange("GET", f"/jobs/{segment(job_id)}", _job)


def wait_job(job_id: str, wait_s: float, timeout: httpx.Timeout) -> Exchange[Job]:
    """``GET /jobs/<id>?wait_s=``: the job once it has finished, or as it stands after
    ``wait_s`` (or the service's cap, if less)."""
    params = {"wait_s": f"{wait_s:.3f}"}
    return Exchange("GET", f"/jobs/{segment(job_id)}", _job, params=params, timeout=timeout)


def list_jobs(
    *,
    state: str | Iterable[str] | None,
    task: str | None,
    queue: str | None,
    text: str | None,
    schedule_id: str | None,
    limit: int,
    cursor: str | None,
) -> Exchange[records.JobsPage]:
    params = {"limit": str(limit)}
    if state is not None:
        params["state"] = state if isinstance(state, str) else ",".join(state)
    filters = (
        ("task", task), ("queue", queue), ("q", text), ("schedule", schedule_id),
        ("cursor", cursor),
    )  # fmt: skip
    for name, value in filters:
        if value is not None:
            params[name] = value
    return Exchange("GET", "/jobs", lambda r: records.jobs_page(_json(r)), params=params)


def cancel(job_id: str) -> Exchange[Job]:
    return Exchange("POST", f"/jobs/{segment(job_id)}/cancel", _job)


def create_workflow(body: dict[str, Any]) -> Exchange[records.WorkflowInfo]:
    return Exchange("POST", "/workflows", lambda r: records.workflow_info(_json(r)), body=body)


def get_workflow(workflow_id: str) -> Exchange[records.WorkflowInfo]:
    path = f"/workflows/{segment(workflow_id)}"
    return Exchange("GET", path, lambda r: records.workflow_info(_json(r)))


def cancel_workflow(workflow_id: str) -> Exchange[records.WorkflowInfo]:
    path = f"/workflows/{segment(workflow_id)}/cancel"
    return Exchange("POST", path, lambda r: records.workflow_info(_json(r)))


def retry(job_id: str) -> Exchange[Job]:
    return Exchange("POST", f"/jobs/{segment(job_id)}/retry", _job)


def logs(job_id: str, tail: int | None) -> Exchange[records.Logs]:
    params = None if tail is None else {"tail": str(tail)}
    path = f"/jobs/{segment(job_id)}/logs"
    return Exchange("GET", path, lambda r: records.logs(_json(r)), params=params)


def tasks() -> Exchange[list[records.TaskInfo]]:
    return Exchange("GET", "/tasks", lambda r: [records.task_info(t) for t in _json(r)["tasks"]])


def get_json(path: str) -> Exchange[dict[str, Any]]:
    """A read whose JSON is handed over as it is (``/stats``, ``/workers``)."""
    return Exchange("GET", path, _json)


def health() -> Exchange[dict[str, Any]]:
    """``/health``: its body also when it says 503 (degraded, draining), which is its answer."""
    return Exchange("GET", "/health", _json, also_read=frozenset({503}))


def create_schedule(body: dict[str, Any]) -> Exchange[records.ScheduleInfo]:
    return Exchange("POST", "/schedules", lambda r: records.schedule_info(_json(r)), body=body)


def list_schedules() -> Exchange[list[records.ScheduleInfo]]:
    return Exchange(
        "GET", "/schedules", lambda r: [records.schedule_info(s) for s in _json(r)["schedules"]]
    )


def get_schedule(schedule_id: str) -> Exchange[records.ScheduleInfo]:
    path = f"/schedules/{segment(schedule_id)}"
    return Exchange("GET", path, lambda r: records.schedule_info(_json(r)))


def delete_schedule(schedule_id: str) -> Exchange[None]:
    return Exchange("DELETE", f"/schedules/{segment(schedule_id)}", _no_content)


def pause_schedule(schedule_id: str, *, paused: bool) -> Exchange[records.ScheduleInfo]:
    """``POST /schedules/<id>/pause`` (or ``/resume`` when not ``paused``)."""
    action = "pause" if paused else "resume"
    path = f"/schedules/{segment(schedule_id)}/{action}"
    return Exchange("POST", path, lambda r: records.schedule_info(_json(r)))


def task_call(
    task: str | TaskFunction[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> TaskCall:
    """A submit's task, by name or as the function ``@task`` returned, with its arguments."""
    if isinstance(task, TaskFunction):
        return task.call(*args, **kwargs)
    return TaskCall(task, args, kwargs)


def schedule_body(
    task: str | TaskFunction[Any, Any],
    cron: str,
    args: Iterable[Any],
    kwargs: dict[str, Any] | None,
    schedule_id: str | None,
    options: OptionFields,
) -> dict[str, Any]:
    """The body of ``POST /schedules``."""
    name = task.name if isinstance(task, TaskFunction) else task
    call = TaskCall(name, tuple(args), kwargs or {}, submit_options(**options))
    body = {**call.body(call.options), "cron": cron}
    if schedule_id is not None:
        body["id"] = schedule_id
    return body


def batches(bodies: list[dict[str, Any]], key: str | None) -> list[tuple[list[Any], str | None]]:
    """``bodies`` in requests of at most ``MAX_JOBS_PER_BATCH``, each with its own
    Idempotency-Key derived from ``key``: submitting the same list again repeats none."""
    chunks = [bodies[i : i + MAX_JOBS_PER_BATCH] for i in range(0, len(bodies), MAX_JOBS_PER_BATCH)]
    if key is None or len(chunks) == 1:
        return [(chunk, key) for chunk in chunks]
    return [(chunk, f"{key}#{n}") for n, chunk in enumerate(chunks)]

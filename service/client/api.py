"""The API's requests and how to read their answers, with no I/O of its own.

``Client`` and ``AsyncClient`` differ only in how they send an ``Exchange`` and read a stream;
what to ask and what an answer means is said once, here (the sans-I/O split of hypercorn's
``protocol/``).
"""

from __future__ import annotations

import time
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
from .events import Event, StateEvent, decode
from .options import OptionFields, SubmitOptions, TaskCall, submit_options

T = TypeVar("T")

JOBS_PAGE_SIZE = 100
MAX_JOBS_PER_BATCH = 1000  # what POST /jobs/batch takes at once
STREAM_IDLE_S = 60.0  # no byte for this long (keep-alives come every 15 s): reconnect
RECONNECT_FOR_S = 60.0  # a dropped stream is tried again for this long before giving up
RECONNECT_DELAYS_S = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


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


def _segment(text: str) -> str:
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
    return Exchange("GET", f"/jobs/{_segment(job_id)}", _job)


def list_jobs(
    *,
    state: str | Iterable[str] | None,
    task: str | None,
    queue: str | None,
    text: str | None,
    limit: int,
    cursor: str | None,
) -> Exchange[records.JobsPage]:
    params = {"limit": str(limit)}
    if state is not None:
        params["state"] = state if isinstance(state, str) else ",".join(state)
    for name, value in (("task", task), ("queue", queue), ("q", text), ("cursor", cursor)):
        if value is not None:
            params[name] = value
    return Exchange("GET", "/jobs", lambda r: records.jobs_page(_json(r)), params=params)


def cancel(job_id: str) -> Exchange[Job]:
    return Exchange("POST", f"/jobs/{_segment(job_id)}/cancel", _job)


def retry(job_id: str) -> Exchange[Job]:
    return Exchange("POST", f"/jobs/{_segment(job_id)}/retry", _job)


def logs(job_id: str, tail: int | None) -> Exchange[records.Logs]:
    params = None if tail is None else {"tail": str(tail)}
    path = f"/jobs/{_segment(job_id)}/logs"
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
    path = f"/schedules/{_segment(schedule_id)}"
    return Exchange("GET", path, lambda r: records.schedule_info(_json(r)))


def delete_schedule(schedule_id: str) -> Exchange[None]:
    return Exchange("DELETE", f"/schedules/{_segment(schedule_id)}", _no_content)


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


# -- following a stream -------------------------------------------------------------------------


class StreamCursor:
    """Where a stream is, so that a new connection resumes it (``Last-Event-ID``) and knows
    when it has ended: a job's stream ends after the terminal event nothing follows."""

    def __init__(self, job_id: str | None = None, after_id: int | None = None) -> None:
        self.job_id = job_id
        self.last_id = after_id
        self.ended = False
        self._after_terminal = False

    @property
    def path(self) -> str:
        return "/events" if self.job_id is None else f"/jobs/{_segment(self.job_id)}/events"

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        if self.last_id is not None:
            headers["Last-Event-ID"] = str(self.last_id)
        return headers

    def feed(self, kind: str, data: str, event_id: str) -> Event | None:
        """The event of one SSE message (None for a position, keep-alive or retry message)."""
        if event_id.isdigit():
            self.last_id = int(event_id)
        if self.last_id is None:
            return None
        try:
            event = decode(kind, data, self.last_id)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            detail = f"not an event of Conveyor's ({exc!r}): {data[:100]!r}"
            raise ApiError(200, "unexpected_response", detail, {}) from None
        if event is not None:
            self._after_terminal = isinstance(event, StateEvent) and event.is_terminal
        return event

    def closed(self) -> None:
        """The service closed the stream: the end, or a drop (it is stopping) to resume from."""
        if self.job_id is not None and self._after_terminal:
            self.ended = True

    @staticmethod
    def check(response: httpx.Response) -> None:
        """ApiError unless ``response`` is an event stream (a proxy may answer with a page)."""
        kind = response.headers.get("content-type", "").partition(";")[0].strip()
        if kind != "text/event-stream":
            raise unexpected(response, f"expected an event stream, got {kind or 'no type'!r}")

    def resume(self) -> None:
        """Follow the stream again from where it ended: the job was run again since."""
        self.ended = False
        self._after_terminal = False

    def no_content(self) -> None:
        """204: the job has finished and every event of it was seen."""
        self.ended = True


class Deadline:
    """How long a wait may still take; None: for ever."""

    def __init__(self, timeout_s: float | None, clock: Callable[[], float] = time.monotonic):
        self.timeout_s = timeout_s
        self._clock = clock
        self._end = None if timeout_s is None else clock() + timeout_s

    def remaining_s(self) -> float | None:
        return None if self._end is None else max(0.0, self._end - self._clock())

    @property
    def expired(self) -> bool:
        return self._end is not None and self._clock() >= self._end

    def stream_timeout(self, request_timeout_s: float) -> httpx.Timeout:
        """A stream's timeouts: connecting and its answer within the deadline too, each read
        within ``STREAM_IDLE_S`` (keep-alives come every 15 s)."""
        remaining = self.remaining_s()
        if remaining is None:
            return httpx.Timeout(request_timeout_s, read=STREAM_IDLE_S)
        remaining = max(remaining, 0.001)
        return httpx.Timeout(min(request_timeout_s, remaining), read=min(STREAM_IDLE_S, remaining))


class Transient(Exception):
    """A reopened stream was answered 502, 503 or 504: a proxy in front of a restarting
    service, say. It is tried again like a refused connection."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        super().__init__(str(error))


TRANSIENT_STATUSES = frozenset({502, 503, 504})


class Reconnects:
    """The waits between attempts to reopen a dropped stream, and when to give up."""

    def __init__(self, url: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._url = url
        self._clock = clock
        self._connected_once = False
        self._failing_since: float | None = None
        self._failures = 0

    def connected(self) -> None:
        self._connected_once = True
        self._failing_since = None
        self._failures = 0

    def refused(self, response: httpx.Response) -> Exception:
        """What a stream's error answer means: the end, or (once it had been open) a proxy's
        passing refusal to try again."""
        error = error_of(response)
        if self._connected_once and response.status_code in TRANSIENT_STATUSES:
            return Transient(error)
        return error

    def delay_s(self, exc: httpx.TransportError | Transient) -> float:
        """The wait before the next attempt; ConnectionFailed if the first connection failed,
        or the service has been unreachable for ``RECONNECT_FOR_S``."""
        now = self._clock()
        if self._failing_since is None:
            self._failing_since = now
        if not self._connected_once or now - self._failing_since > RECONNECT_FOR_S:
            if isinstance(exc, Transient):
                raise exc.error from None
            raise connection_failed(self._url, exc) from None
        delay = RECONNECT_DELAYS_S[min(self._failures, len(RECONNECT_DELAYS_S) - 1)]
        self._failures += 1
        return delay

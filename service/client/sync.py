"""``Client``: the service from synchronous code (scripts, Flask, Django), through httpx."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Coroutine, Generator, Iterable, Iterator
from types import TracebackType
from typing import Any, Generic, ParamSpec, TypeVar, cast, overload

import httpx
from httpx_sse import EventSource
from typing_extensions import Unpack

from ..jobs import Job
from ..taskfn import TaskFunction
from . import api, stream, transport, workflows
from .errors import WaitTimeout
from .events import Event
from .options import OptionFields, SubmitOptions, TaskCall, submit_options
from .outcome import outcome, workflow_outcome
from .records import Logs, ScheduleInfo, TaskInfo, WorkflowInfo
from .settings import ClientSettings
from .watchdog import watchdog
from .workflows import Step

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class Client:
    """The service at ``url`` (default ``CONVEYOR_URL``, else ``http://127.0.0.1:8000``) with
    ``token`` (default ``CONVEYOR_TOKEN``); ``timeout_s`` bounds each request (not waits).

    Use it as a context manager, or ``close()`` it: it keeps its connections open between calls.
    """

    def __init__(
        self, url: str | None = None, token: str | None = None, timeout_s: float = 10.0
    ) -> None:
        self.settings = ClientSettings.resolve(url, token, timeout_s)
        self.url = self.settings.url
        # plain HTTP goes over connections of our own, at a third of httpx's transport's CPU
        self._http = httpx.Client(
            base_url=self.url,
            headers=self.settings.headers(),
            timeout=timeout_s,
            transport=transport.for_url(self.url),
        )
        self.schedules = Schedules(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return f"<Client {self.url}>"

    # -- submitting -----------------------------------------------------------------------------

    @overload
    def submit(
        self, task: TaskFunction[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> JobHandle[R]: ...
    @overload
    def submit(
        self, task: TaskFunction[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> JobHandle[R]: ...
    @overload
    def submit(self, task: str, /, *args: Any, **kwargs: Any) -> JobHandle[Any]: ...
    def submit(self, task: str | TaskFunction[Any, Any], /, *args: Any, **kwargs: Any) -> Any:
        """Submit a job of ``task`` (its name, or the function ``@task`` returned) with these
        arguments; its handle, once the service has stored it. Job options: ``with_options``."""
        return Submitter(self, SubmitOptions()).submit(task, *args, **kwargs)

    def submit_many(self, calls: Iterable[TaskCall]) -> list[JobHandle[Any]]:
        """Submit several jobs (``call(task, *args, **kwargs)`` or ``add.call(2, 3)`` each) with
        ``POST /jobs/batch``: all or none of each thousand."""
        return Submitter(self, SubmitOptions()).submit_many(calls)

    def with_options(self, **options: Unpack[OptionFields]) -> Submitter:
        """Submit with these job options: ``client.with_options(priority=5, key="r-7")``."""
        return Submitter(self, submit_options(**options))

    def chain(self, *steps: Step) -> WorkflowHandle:
        """Run ``steps`` one after another, each given the output of the one before as its
        first argument (a call's ``without_input()`` takes none); steps are ``call(...)``s,
        ``chain(...)``s or ``group(...)``s. All its jobs are made in one transaction."""
        return Submitter(self, SubmitOptions()).chain(*steps)

    def group(self, *members: Step, then: Step | None = None) -> WorkflowHandle:
        """Run ``members`` side by side, then ``then`` (if given) with the list of their
        outputs, in order."""
        return Submitter(self, SubmitOptions()).group(*members, then=then)

    def workflow(self, workflow_id: str) -> WorkflowHandle:
        return WorkflowHandle(self, workflow_id)

    # -- jobs -----------------------------------------------------------------------------------

    def job(self, job_id: str) -> JobHandle[Any]:
        """A handle on the job ``job_id`` (nothing is asked of the service until it is used)."""
        return JobHandle(self, job_id)

    def jobs(
        self,
        *,
        state: str | Iterable[str] | None = None,
        task: str | None = None,
        queue: str | None = None,
        text: str | None = None,
        schedule_id: str | None = None,
        page_size: int = api.JOBS_PAGE_SIZE,
    ) -> Iterator[Job]:
        """Every job that matches, newest first, read a page at a time as the loop goes on."""
        cursor: str | None = None
        while True:
            exchange = api.list_jobs(
                state=state, task=task, queue=queue, text=text, schedule_id=schedule_id,
                limit=page_size, cursor=cursor,
            )  # fmt: skip
            page = self._send(exchange)
            yield from page.jobs
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def cancel(self, job_id: str) -> Job:
        """Cancel a job, also while it runs; the answer comes once its processes are gone."""
        return self._send(api.cancel(job_id))

    def retry(self, job_id: str) -> Job:
        """Run a failed or canceled job again (the same job, a new attempt)."""
        return self._send(api.retry(job_id))

    def tasks(self) -> list[TaskInfo]:
        return self._send(api.tasks())

    def health(self) -> dict[str, Any]:
        """``GET /health``: its body also when the service answers 503 (see ``status``)."""
        return self._send(api.health())

    def stats(self) -> dict[str, Any]:
        """``GET /stats``: jobs by state and queue, throughput, and the ``event_id`` they are
        exact as of (follow ``events(after_id=...)`` from there to keep them current)."""
        return self._send(api.get_json("/stats"))

    def events(self, *, after_id: int | None = None) -> Generator[Event, None, None]:
        """Every job's events as they happen (after event ``after_id``, if given), resumed
        across dropped connections; it never ends by itself."""
        return self.follow(stream.StreamCursor(None, after_id), stream.Deadline(None))

    # -- the wire -------------------------------------------------------------------------------

    def _send(self, exchange: api.Exchange[T]) -> T:
        try:
            response = self._request(exchange)
        except httpx.TransportError as exc:
            raise api.connection_failed(self.url, exc) from None
        return exchange.finish(response)

    def _request(self, exchange: api.Exchange[Any]) -> httpx.Response:
        timeout = httpx.USE_CLIENT_DEFAULT if exchange.timeout is None else exchange.timeout
        return self._http.request(
            exchange.method, exchange.path, params=exchange.params,
            content=exchange.content(), headers=exchange.all_headers(), timeout=timeout,
        )  # fmt: skip

    def _wait(self, job_id: str, deadline: stream.Deadline) -> Job:
        """The job once it has finished: long polls (``GET /jobs/<id>?wait_s=``), each answered
        as soon as it finishes; a drop, a refused connection or a proxy's 502/503/504 is tried
        again as ``follow`` does. WaitTimeout once ``deadline`` has passed."""
        reconnects = stream.Reconnects(self.url)
        while True:
            try:
                exchange = api.wait_job(job_id, *deadline.long_poll(self.settings.timeout_s))
                response = self._request(exchange)
                reconnects.answered(response)
                job = exchange.finish(response)
                if job.is_terminal:
                    return job
            except (httpx.TransportError, stream.Transient) as exc:
                time.sleep(reconnects.pause_s(exc, deadline))
            if deadline.expired:
                raise WaitTimeout(job_id, deadline.timeout_s or 0.0)

    def follow(
        self, cursor: stream.StreamCursor, deadline: stream.Deadline
    ) -> Generator[Event, None, None]:
        """The events of the stream ``cursor`` names until it ends, reconnecting after drops;
        WaitTimeout once ``deadline`` has passed."""
        reconnects = stream.Reconnects(self.url)
        while not cursor.ended:
            try:
                yield from self._stream_once(cursor, deadline, reconnects)
            except (httpx.TransportError, stream.Transient) as exc:
                time.sleep(reconnects.pause_s(exc, deadline))
            if deadline.expired and not cursor.ended:
                raise WaitTimeout(cursor.job_id or "", deadline.timeout_s or 0.0)

    def _stream_once(
        self, cursor: stream.StreamCursor, deadline: stream.Deadline, reconnects: stream.Reconnects
    ) -> Generator[Event, None, None]:
        timeout = deadline.stream_timeout(self.settings.timeout_s)  # also for connecting
        with self._http.stream("GET", cursor.path, headers=cursor.headers(), timeout=timeout) as r:
            if r.status_code == 204:
                cursor.no_content()
                return
            if not r.is_success:
                r.read()
                raise reconnects.refused(r)
            cursor.check(r)
            reconnects.connected()
            with _cut_at(deadline, r):
                for sse in EventSource(r).iter_sse():
                    event = cursor.feed(sse.event, sse.data, sse.id)
                    if event is not None:
                        yield event
                    if deadline.expired:
                        cursor.closed()  # a terminal event just now is the end, in time
                        return
            cursor.closed()


@contextlib.contextmanager
def _cut_at(deadline: stream.Deadline, response: httpx.Response) -> Iterator[None]:
    """Cut the stream's connection when ``deadline`` passes: a blocking read cannot be given a
    deadline of its own, but a socket shut down under it returns at once (as a read error)."""
    remaining_s = deadline.remaining_s()
    if remaining_s is None:
        yield
        return
    number = watchdog.call_at(time.monotonic() + remaining_s, lambda: _shut_down(response))
    try:
        yield
    finally:
        watchdog.cancel(number)


def _shut_down(response: httpx.Response) -> None:
    stream = response.extensions.get("network_stream")
    sock = None if stream is None else stream.get_extra_info("socket")
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class Submitter:
    """Submits with a set of job options (``Client.with_options``)."""

    def __init__(self, client: Client, options: SubmitOptions) -> None:
        self._client = client
        self.options = options

    def with_options(self, **options: Unpack[OptionFields]) -> Submitter:
        return Submitter(self._client, self.options.merged(submit_options(**options)))

    @overload
    def submit(
        self, task: TaskFunction[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> JobHandle[R]: ...
    @overload
    def submit(
        self, task: TaskFunction[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> JobHandle[R]: ...
    @overload
    def submit(self, task: str, /, *args: Any, **kwargs: Any) -> JobHandle[Any]: ...
    def submit(self, task: str | TaskFunction[Any, Any], /, *args: Any, **kwargs: Any) -> Any:
        done = self._client._send(api.submission(self.options, task, args, kwargs))
        return JobHandle(self._client, done.job.id, done.job, done.created)

    def submit_many(self, calls: Iterable[TaskCall]) -> list[JobHandle[Any]]:
        return [
            JobHandle(self._client, done.job.id, done.job, done.created)
            for exchange in api.batch_submissions(self.options, calls)
            for done in self._client._send(exchange)
        ]

    def chain(self, *steps: Step) -> WorkflowHandle:
        return self._workflow(workflows.chain(*steps))

    def group(self, *members: Step, then: Step | None = None) -> WorkflowHandle:
        return self._workflow(workflows.group(*members, then=then))

    def _workflow(self, flow: workflows.Chain | workflows.Group) -> WorkflowHandle:
        made = self._client._send(api.create_workflow(workflows.body(flow, self.options)))
        return WorkflowHandle(self._client, made.id, made)


class JobHandle(Generic[R]):
    """One job: its id, and ways to read, wait for, follow and stop it."""

    def __init__(
        self, client: Client, job_id: str, job: Job | None = None, created: bool | None = None
    ) -> None:
        self._client = client
        self.id = job_id
        self.submitted = job  # the job as the submit's answer had it, if this came from one
        self.created = created  # False: the submit found this job (its key) instead of making it

    def __repr__(self) -> str:
        return f"<JobHandle {self.id}>"

    def status(self) -> Job:
        """The job as it is now."""
        return self._client._send(api.get_job(self.id))

    def wait(self, timeout_s: float | None = None) -> Job:
        """The job once it has finished, whatever its outcome (a job that is retried, to its
        last attempt's end): one long-poll request (``?wait_s=``) if it ends within 30 s
        (``stream.LONG_POLL_S``), one more each 30 s after that, no polling. WaitTimeout after
        ``timeout_s``."""
        return self._client._wait(self.id, stream.Deadline(timeout_s))

    def result(self, timeout_s: float | None = None) -> R:
        """The job's result once it has succeeded, answered the moment it does: one long-poll
        request (``?wait_s=``), no polling (see ``wait``).

        JobFailed (with the task's error type, message and traceback) or JobCanceled if it
        did not; WaitTimeout (a TimeoutError) after ``timeout_s``, the job going on.
        """
        return cast(R, outcome(self.wait(timeout_s)))

    def cancel(self) -> Job:
        return self._client.cancel(self.id)

    def retry(self) -> Job:
        return self._client.retry(self.id)

    def logs(self, tail: int | None = None) -> Logs:
        """What the job wrote, the last ``tail`` entries if given."""
        return self._client._send(api.logs(self.id, tail))

    def events(
        self, *, after_id: int | None = None, timeout_s: float | None = None
    ) -> Generator[Event, None, None]:
        """The job's events from its first (or after ``after_id``), then live; resumed with
        ``Last-Event-ID`` across dropped connections; the iteration ends with the job's end
        (WaitTimeout if that has not come within ``timeout_s``)."""
        cursor = stream.StreamCursor(self.id, after_id)
        return self._client.follow(cursor, stream.Deadline(timeout_s))


class WorkflowHandle:
    """One workflow: its id, its jobs, and ways to read, wait for, follow and stop it."""

    def __init__(self, client: Client, workflow_id: str, made: WorkflowInfo | None = None):
        self._client = client
        self.id = workflow_id
        self.submitted = made  # the workflow as the create's answer had it

    def __repr__(self) -> str:
        return f"<WorkflowHandle {self.id}>"

    @property
    def jobs(self) -> list[JobHandle[Any]]:
        """A handle on each of its jobs, upstream first."""
        info = self.submitted or self.status()
        return [JobHandle(self._client, job.id, job) for job in info.jobs]

    def status(self) -> WorkflowInfo:
        return self._client._send(api.get_workflow(self.id))

    def wait(self, timeout_s: float | None = None) -> WorkflowInfo:
        """The workflow once all its jobs have finished: its stream followed to its end, no
        polling. WaitTimeout after ``timeout_s``."""
        deadline = stream.Deadline(timeout_s)
        cursor = stream.WorkflowCursor(self.id)
        while True:
            cursor.ended = False
            for _ in self._client.follow(cursor, deadline):
                pass
            info = self.status()
            if info.is_finished:
                return info
            if deadline.expired:
                raise WaitTimeout(self.id, deadline.timeout_s or 0.0)

    def result(self, timeout_s: float | None = None) -> Any:
        """Its result once it has succeeded: a chain's last output, a group's list of
        outputs, or its callback's. JobFailed or JobCanceled (for the job that failed, or the
        first canceled) if it did not; WaitTimeout after ``timeout_s``."""
        return workflow_outcome(self.wait(timeout_s))

    def cancel(self) -> WorkflowInfo:
        """Cancel every job of it that has not finished, running ones too."""
        return self._client._send(api.cancel_workflow(self.id))

    def events(self, *, timeout_s: float | None = None) -> Generator[Event, None, None]:
        """Its jobs' events from the first, then live, until they have all finished."""
        return self._client.follow(stream.WorkflowCursor(self.id), stream.Deadline(timeout_s))


class Schedules:
    """The service's schedules: ``client.schedules.create(...)``, ``.list()``, ``.get(id)``,
    ``.pause(id)``, ``.resume(id)``, ``.delete(id)``."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        task: str | TaskFunction[Any, Any],
        cron: str,
        *,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        schedule_id: str | None = None,
        **options: Unpack[OptionFields],
    ) -> ScheduleInfo:
        """Run ``task`` with these arguments at every tick of ``cron``."""
        body = api.schedule_body(task, cron, args, kwargs, schedule_id, options)
        return self._client._send(api.create_schedule(body))

    def list(self) -> list[ScheduleInfo]:
        return self._client._send(api.list_schedules())

    def get(self, schedule_id: str) -> ScheduleInfo:
        return self._client._send(api.get_schedule(schedule_id))

    def delete(self, schedule_id: str) -> None:
        self._client._send(api.delete_schedule(schedule_id))

    def pause(self, schedule_id: str) -> ScheduleInfo:
        """Make no jobs until resumed; pausing a paused schedule changes nothing."""
        return self._client._send(api.pause_schedule(schedule_id, paused=True))

    def resume(self, schedule_id: str) -> ScheduleInfo:
        """Make jobs again from the first tick after now (the ticks passed make none)."""
        return self._client._send(api.pause_schedule(schedule_id, paused=False))

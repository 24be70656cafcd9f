"""``AsyncClient``: the service from asyncio code (FastAPI, aiohttp, workers of other queues),
with the same methods as ``Client``, awaited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Iterable
from types import TracebackType
from typing import Any, Generic, ParamSpec, TypeVar, cast, overload

import httpx
from httpx_sse import EventSource
from typing_extensions import Unpack

from ..jobs import Job
from ..taskfn import TaskFunction
from . import aio_transport, api, stream, workflows
from .errors import WaitTimeout
from .events import Event
from .options import OptionFields, SubmitOptions, TaskCall, submit_options
from .outcome import outcome, workflow_outcome
from .records import Logs, ScheduleInfo, TaskInfo, WorkflowInfo
from .settings import ClientSettings
from .workflows import Step

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class AsyncClient:
    """Like ``Client``, for ``async`` code: ``async with AsyncClient() as client: ...``."""

    def __init__(
        self, url: str | None = None, token: str | None = None, timeout_s: float = 10.0
    ) -> None:
        self.settings = ClientSettings.resolve(url, token, timeout_s)
        self.url = self.settings.url
        # plain HTTP goes over connections of our own, at half httpx's async transport's CPU
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=self.settings.headers(),
            timeout=timeout_s,
            transport=aio_transport.for_url(self.url),
        )
        self.schedules = AsyncSchedules(self)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def __repr__(self) -> str:
        return f"<AsyncClient {self.url}>"

    # -- submitting -----------------------------------------------------------------------------

    @overload
    async def submit(
        self, task: TaskFunction[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> AsyncJobHandle[R]: ...
    @overload
    async def submit(
        self, task: TaskFunction[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> AsyncJobHandle[R]: ...
    @overload
    async def submit(self, task: str, /, *args: Any, **kwargs: Any) -> AsyncJobHandle[Any]: ...
    async def submit(self, task: str | TaskFunction[Any, Any], /, *args: Any, **kwargs: Any) -> Any:
        """See ``Client.submit``."""
        return await AsyncSubmitter(self, SubmitOptions()).submit(task, *args, **kwargs)

    async def submit_many(self, calls: Iterable[TaskCall]) -> list[AsyncJobHandle[Any]]:
        return await AsyncSubmitter(self, SubmitOptions()).submit_many(calls)

    def with_options(self, **options: Unpack[OptionFields]) -> AsyncSubmitter:
        return AsyncSubmitter(self, submit_options(**options))

    async def chain(self, *steps: Step) -> AsyncWorkflowHandle:
        """See ``Client.chain``."""
        return await AsyncSubmitter(self, SubmitOptions()).chain(*steps)

    async def group(self, *members: Step, then: Step | None = None) -> AsyncWorkflowHandle:
        """See ``Client.group``."""
        return await AsyncSubmitter(self, SubmitOptions()).group(*members, then=then)

    def workflow(self, workflow_id: str) -> AsyncWorkflowHandle:
        return AsyncWorkflowHandle(self, workflow_id)

    # -- jobs -----------------------------------------------------------------------------------

    def job(self, job_id: str) -> AsyncJobHandle[Any]:
        return AsyncJobHandle(self, job_id)

    async def jobs(
        self,
        *,
        state: str | Iterable[str] | None = None,
        task: str | None = None,
        queue: str | None = None,
        text: str | None = None,
        schedule_id: str | None = None,
        page_size: int = api.JOBS_PAGE_SIZE,
    ) -> AsyncIterator[Job]:
        """``async for job in client.jobs(...)``: every job that matches, newest first."""
        cursor: str | None = None
        while True:
            exchange = api.list_jobs(
                state=state, task=task, queue=queue, text=text, schedule_id=schedule_id,
                limit=page_size, cursor=cursor,
            )  # fmt: skip
            page = await self._send(exchange)
            for job in page.jobs:
                yield job
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def cancel(self, job_id: str) -> Job:
        return await self._send(api.cancel(job_id))

    async def retry(self, job_id: str) -> Job:
        return await self._send(api.retry(job_id))

    async def tasks(self) -> list[TaskInfo]:
        return await self._send(api.tasks())

    async def health(self) -> dict[str, Any]:
        """``GET /health``: its body also when the service answers 503 (see ``status``)."""
        return await self._send(api.health())

    async def stats(self) -> dict[str, Any]:
        """``GET /stats``: jobs by state and queue, throughput, and the ``event_id`` they are
        exact as of (follow ``events(after_id=...)`` from there to keep them current)."""
        return await self._send(api.get_json("/stats"))

    def events(self, *, after_id: int | None = None) -> AsyncGenerator[Event, None]:
        """``async for event in client.events()``: every job's events; it never ends by itself."""
        return self.follow(stream.StreamCursor(None, after_id), stream.Deadline(None))

    # -- the wire -------------------------------------------------------------------------------

    async def _send(self, exchange: api.Exchange[T]) -> T:
        try:
            response = await self._request(exchange)
        except httpx.TransportError as exc:
            raise api.connection_failed(self.url, exc) from None
        return exchange.finish(response)

    async def _request(self, exchange: api.Exchange[Any]) -> httpx.Response:
        timeout = httpx.USE_CLIENT_DEFAULT if exchange.timeout is None else exchange.timeout
        return await self._http.request(
            exchange.method, exchange.path, params=exchange.params,
            content=exchange.content(), headers=exchange.all_headers(), timeout=timeout,
        )  # fmt: skip

    async def _wait(self, job_id: str, deadline: stream.Deadline) -> Job:
        """See ``Client._wait``."""
        reconnects = stream.Reconnects(self.url)
        while True:
            try:
                exchange = api.wait_job(job_id, *deadline.long_poll(self.settings.timeout_s))
                response = await self._request(exchange)
                reconnects.answered(response)
                job = exchange.finish(response)
                if job.is_terminal:
                    return job
            except (httpx.TransportError, stream.Transient) as exc:
                await asyncio.sleep(reconnects.pause_s(exc, deadline))
            if deadline.expired:
                raise WaitTimeout(job_id, deadline.timeout_s or 0.0)

    async def follow(
        self, cursor: stream.StreamCursor, deadline: stream.Deadline
    ) -> AsyncGenerator[Event, None]:
        """See ``Client.follow``; here the deadline cuts a wait short wherever it is."""
        reconnects = stream.Reconnects(self.url)
        while not cursor.ended:
            opened = self._stream_once(cursor, reconnects)
            try:
                while True:
                    # the deadline covers each wait for the stream, never the caller's work
                    # between events: a timeout held across a yield would cancel the caller
                    async with asyncio.timeout(deadline.remaining_s()):
                        event = await anext(opened, None)
                    if event is None:
                        break
                    yield event
            except TimeoutError:
                raise WaitTimeout(cursor.job_id or "", deadline.timeout_s or 0.0) from None
            except (httpx.TransportError, stream.Transient) as exc:
                await asyncio.sleep(reconnects.pause_s(exc, deadline))
            finally:
                await opened.aclose()

    async def _stream_once(
        self, cursor: stream.StreamCursor, reconnects: stream.Reconnects
    ) -> AsyncGenerator[Event, None]:
        timeout = httpx.Timeout(self.settings.timeout_s, read=stream.STREAM_IDLE_S)
        async with self._http.stream(
            "GET", cursor.path, headers=cursor.headers(), timeout=timeout
        ) as r:
            if r.status_code == 204:
                cursor.no_content()
                return
            if not r.is_success:
                await r.aread()
                raise reconnects.refused(r)
            cursor.check(r)
            reconnects.connected()
            async for sse in EventSource(r).aiter_sse():
                event = cursor.feed(sse.event, sse.data, sse.id)
                if event is not None:
                    yield event
            cursor.closed()


class AsyncSubmitter:
    """Submits with a set of job options (``AsyncClient.with_options``)."""

    def __init__(self, client: AsyncClient, options: SubmitOptions) -> None:
        self._client = client
        self.options = options

    def with_options(self, **options: Unpack[OptionFields]) -> AsyncSubmitter:
        return AsyncSubmitter(self._client, self.options.merged(submit_options(**options)))

    @overload
    async def submit(
        self, task: TaskFunction[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> AsyncJobHandle[R]: ...
    @overload
    async def submit(
        self, task: TaskFunction[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> AsyncJobHandle[R]: ...
    @overload
    async def submit(self, task: str, /, *args: Any, **kwargs: Any) -> AsyncJobHandle[Any]: ...
    async def submit(self, task: str | TaskFunction[Any, Any], /, *args: Any, **kwargs: Any) -> Any:
        done = await self._client._send(api.submission(self.options, task, args, kwargs))
        return AsyncJobHandle(self._client, done.job.id, done.job, done.created)

    async def submit_many(self, calls: Iterable[TaskCall]) -> list[AsyncJobHandle[Any]]:
        return [
            AsyncJobHandle(self._client, done.job.id, done.job, done.created)
            for exchange in api.batch_submissions(self.options, calls)
            for done in await self._client._send(exchange)
        ]

    async def chain(self, *steps: Step) -> AsyncWorkflowHandle:
        return await self._workflow(workflows.chain(*steps))

    async def group(self, *members: Step, then: Step | None = None) -> AsyncWorkflowHandle:
        return await self._workflow(workflows.group(*members, then=then))

    async def _workflow(self, flow: workflows.Chain | workflows.Group) -> AsyncWorkflowHandle:
        exchange = api.create_workflow(workflows.body(flow, self.options))
        made = await self._client._send(exchange)
        return AsyncWorkflowHandle(self._client, made.id, made)


class AsyncJobHandle(Generic[R]):
    """Like ``JobHandle``, awaited: ``await job.result()``, ``async for e in job.events()``."""

    def __init__(
        self, client: AsyncClient, job_id: str, job: Job | None = None, created: bool | None = None
    ) -> None:
        self._client = client
        self.id = job_id
        self.submitted = job
        self.created = created

    def __repr__(self) -> str:
        return f"<AsyncJobHandle {self.id}>"

    async def status(self) -> Job:
        return await self._client._send(api.get_job(self.id))

    async def wait(self, timeout_s: float | None = None) -> Job:
        """See ``JobHandle.wait``."""
        return await self._client._wait(self.id, stream.Deadline(timeout_s))

    async def result(self, timeout_s: float | None = None) -> R:
        """See ``JobHandle.result``."""
        return cast(R, outcome(await self.wait(timeout_s)))

    async def cancel(self) -> Job:
        return await self._client.cancel(self.id)

    async def retry(self) -> Job:
        return await self._client.retry(self.id)

    async def logs(self, tail: int | None = None) -> Logs:
        return await self._client._send(api.logs(self.id, tail))

    def events(
        self, *, after_id: int | None = None, timeout_s: float | None = None
    ) -> AsyncGenerator[Event, None]:
        """See ``JobHandle.events``."""
        cursor = stream.StreamCursor(self.id, after_id)
        return self._client.follow(cursor, stream.Deadline(timeout_s))


class AsyncWorkflowHandle:
    """Like ``WorkflowHandle``, awaited: ``await flow.result()``."""

    def __init__(
        self, client: AsyncClient, workflow_id: str, made: WorkflowInfo | None = None
    ) -> None:
        self._client = client
        self.id = workflow_id
        self.submitted = made

    def __repr__(self) -> str:
        return f"<AsyncWorkflowHandle {self.id}>"

    async def status(self) -> WorkflowInfo:
        return await self._client._send(api.get_workflow(self.id))

    async def wait(self, timeout_s: float | None = None) -> WorkflowInfo:
        """See ``WorkflowHandle.wait``."""
        deadline = stream.Deadline(timeout_s)
        cursor = stream.WorkflowCursor(self.id)
        while True:
            cursor.ended = False
            async for _ in self._client.follow(cursor, deadline):
                pass
            info = await self.status()
            if info.is_finished:
                return info
            if deadline.expired:
                raise WaitTimeout(self.id, deadline.timeout_s or 0.0)

    async def result(self, timeout_s: float | None = None) -> Any:
        """See ``WorkflowHandle.result``."""
        return workflow_outcome(await self.wait(timeout_s))

    async def cancel(self) -> WorkflowInfo:
        return await self._client._send(api.cancel_workflow(self.id))

    def events(self, *, timeout_s: float | None = None) -> AsyncGenerator[Event, None]:
        """See ``WorkflowHandle.events``."""
        return self._client.follow(stream.WorkflowCursor(self.id), stream.Deadline(timeout_s))


class AsyncSchedules:
    """See ``Schedules``."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self,
        task: str | TaskFunction[Any, Any],
        cron: str,
        *,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        schedule_id: str | None = None,
        **options: Unpack[OptionFields],
    ) -> ScheduleInfo:
        body = api.schedule_body(task, cron, args, kwargs, schedule_id, options)
        return await self._client._send(api.create_schedule(body))

    async def list(self) -> list[ScheduleInfo]:
        return await self._client._send(api.list_schedules())

    async def get(self, schedule_id: str) -> ScheduleInfo:
        return await self._client._send(api.get_schedule(schedule_id))

    async def delete(self, schedule_id: str) -> None:
        await self._client._send(api.delete_schedule(schedule_id))

    async def pause(self, schedule_id: str) -> ScheduleInfo:
        return await self._client._send(api.pause_schedule(schedule_id, paused=True))

    async def resume(self, schedule_id: str) -> ScheduleInfo:
        return await self._client._send(api.pause_schedule(schedule_id, paused=False))

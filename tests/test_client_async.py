"""``service.client.AsyncClient`` against a real hypercorn server on a free port, in this loop."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from service.client import (
    AsyncClient,
    Conflict,
    Event,
    InvalidArguments,
    JobCanceled,
    JobFailed,
    LogEvent,
    NotFound,
    ServiceUnavailable,
    ShuttingDown,
    StateEvent,
    Unauthorized,
    WaitTimeout,
    call,
    stream,
)
from service.jobs import JobState
from service.settings import Settings

from . import sample_tasks
from .conftest import ROOT, TASKS, ServiceProcess, lines_in, live_server, wait_until
from .relay import Relay

T = f"{TASKS}."


@pytest.fixture
async def aclient(server: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server) as made:
        yield made


async def test_submit_then_result(aclient: AsyncClient) -> None:
    job = await aclient.submit(T + "add", 2, 3)
    assert job.created is True
    assert await job.result(timeout_s=10) == 5
    total: int = await (await aclient.submit(sample_tasks.async_add, 2, 2)).result(timeout_s=10)
    assert total == 4


async def test_options_batches_and_handles(aclient: AsyncClient) -> None:
    handles = await aclient.with_options(priority=3).submit_many(
        [call(T + "add", 1, 1), sample_tasks.add.call(2, 2)]
    )
    assert [await h.result(timeout_s=10) for h in handles] == [2, 4]
    assert [(await h.status()).options.priority for h in handles] == [3, 3]
    keyed = await aclient.with_options(key="async-key").submit(T + "echo", key="own")
    assert (await keyed.status()).kwargs == {"key": "own"}
    await keyed.result(timeout_s=10)


async def test_a_workflow_awaited(aclient: AsyncClient) -> None:
    flow = await aclient.group(call(T + "add", 1, 1), call(T + "add", 2, 2), then=call(T + "echo"))
    assert await flow.result(timeout_s=20) == {"args": [[2, 4]], "kwargs": {}}
    states = [event.state for event in [e async for e in flow.events(timeout_s=10)]
              if isinstance(event, StateEvent)]  # fmt: skip
    assert states.count(JobState.SUCCEEDED) == 3
    failing = await aclient.chain(call(T + "fail", "no"), call(T + "echo"))
    with pytest.raises(JobFailed):
        await failing.result(timeout_s=20)
    assert (await failing.cancel()).state == "failed"  # nothing left to cancel


async def test_outcomes_raise(aclient: AsyncClient) -> None:
    failed = await aclient.submit(T + "fail", "async boom")
    with pytest.raises(JobFailed) as caught:
        await failed.result(timeout_s=10)
    assert caught.value.error_type == "ValueError" and caught.value.message == "async boom"
    slow = await aclient.submit(T + "sleep", 30)
    with pytest.raises(TimeoutError) as waited:
        await slow.result(timeout_s=0.2)
    assert isinstance(waited.value, WaitTimeout)
    async for event in slow.events():
        if isinstance(event, StateEvent) and event.state is JobState.RUNNING:
            break
    assert (await slow.cancel()).state is JobState.CANCELED
    with pytest.raises(JobCanceled):
        await slow.result(timeout_s=10)
    with pytest.raises(Conflict):
        await slow.cancel()


def sent_requests(client: AsyncClient) -> list[httpx.Request]:
    """Every request ``client`` sends from now on (an httpx event hook on its own pool)."""
    sent: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        sent.append(request)

    client._http.event_hooks["request"].append(record)
    return sent


async def test_result_is_one_long_poll_request(aclient: AsyncClient) -> None:
    quick = await aclient.submit(T + "add", 1, 2)
    slow = await aclient.submit(T + "steps", 10, 0.1)
    sent = sent_requests(aclient)
    assert await quick.result(timeout_s=20) == 3
    assert await slow.result() == 10
    # one request a wait, answered at the job's end: no stream, no poll loop
    assert [r.url.path for r in sent] == [f"/jobs/{quick.id}", f"/jobs/{slow.id}"]
    assert 19 < float(sent[0].url.params["wait_s"]) <= 20  # what remained of the deadline
    assert float(sent[1].url.params["wait_s"]) == stream.LONG_POLL_S
    assert sent[1].extensions["timeout"]["read"] == stream.LONG_POLL_S + 10  # + timeout_s


async def test_a_wait_longer_than_the_service_s_cap_asks_again(settings: Settings) -> None:
    capped = dataclasses.replace(settings, max_wait_s=0.5)
    async with live_server(capped) as url, AsyncClient(url) as client:
        job = await client.submit(T + "sleep", 2)
        sent = sent_requests(client)
        assert await job.result(timeout_s=30) == 2
    # each long poll was answered after 0.5 s with the job still running, and asked again
    assert len(sent) >= 3 and {r.url.path for r in sent} == {f"/jobs/{job.id}"}


async def test_a_wait_outlives_a_kill_9_and_restart_of_the_service(
    service_process: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    service = service_process(CONVEYOR_CONCURRENCY="1")
    service.start()
    await service.wait_ready()
    runs = tmp_path / "runs"
    async with AsyncClient(service.url) as client:
        job = await client.submit(T + "sleep", 2, str(runs))
        sent = sent_requests(client)
        waited = asyncio.ensure_future(job.result(timeout_s=60))
        # the pid written, not the file just made: its run must count
        await wait_until(lambda: lines_in(runs) == 1 and bool(sent), what="the job and the wait")
        service.kill()  # the long poll in flight is dropped
        service.start()
        await service.wait_ready()
        assert await asyncio.wait_for(waited, 30) == 2
        polls = list(sent)
        assert (await job.status()).attempt == 2  # the run after the restart is the one waited for
    assert len(polls) >= 2 and len(runs.read_text().split()) == 2


async def test_events_list_logs_tasks_and_schedules(aclient: AsyncClient) -> None:
    job = await aclient.submit(T + "print_lines", 3)
    events = [e async for e in job.events(timeout_s=20)]
    assert [e.state for e in events if isinstance(e, StateEvent)] == [
        JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED,
    ]  # fmt: skip
    assert [x.text for e in events if isinstance(e, LogEvent) for x in e.entries] == [
        "line 0", "line 1", "line 2",
    ]  # fmt: skip
    assert [e.text for e in (await job.logs(tail=1)).entries] == ["line 2"]
    assert [j.id async for j in aclient.jobs(task=T + "print_lines", page_size=1)] == [job.id]
    assert T + "add" in [t.name for t in await aclient.tasks()]
    made = await aclient.schedules.create(T + "add", "@hourly", args=[1, 2], schedule_id="a-1")
    # the API's own; a task module another test imported may have declared some in this process
    listed = await aclient.schedules.list()
    assert [s.id for s in listed if s.source == "api"] == [made.id]
    assert (await aclient.schedules.pause("a-1")).paused is True
    assert (await aclient.schedules.resume("a-1")).paused is False
    assert [j async for j in aclient.jobs(schedule_id="a-1")] == []  # no tick yet
    await aclient.schedules.delete("a-1")
    with pytest.raises(NotFound):
        await aclient.schedules.get("a-1")
    with pytest.raises(InvalidArguments):
        await aclient.submit(T + "add", "one", "two")


async def test_every_job_s_events_resume_across_a_cut(server: str) -> None:
    relay = Relay(int(server.rsplit(":", 1)[1]))
    await relay.start()
    seen: list[Event] = []

    def finished(job_id: str) -> bool:
        return any(isinstance(e, StateEvent) and e.job_id == job_id and e.is_terminal for e in seen)

    try:
        async with (
            AsyncClient(f"http://127.0.0.1:{relay.port}") as through,
            AsyncClient(server) as direct,
        ):
            first = await through.submit(T + "add", 1, 2)
            await first.result(timeout_s=10)
            start = [e.id async for e in first.events()][-1]

            async def read() -> None:
                async for event in through.events(after_id=start):
                    seen.append(event)

            reader = asyncio.create_task(read())
            before = await through.submit(T + "add", 2, 3)
            await wait_until(lambda: finished(before.id), what="the job before the cut")
            await relay.cut()
            during = await direct.submit(T + "add", 3, 4)  # while the reader is cut off
            await during.result(timeout_s=10)
            await relay.start()
            await wait_until(lambda: finished(during.id), what="the job during the cut")
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            expected = [e.id async for e in before.events()] + [e.id async for e in during.events()]
    finally:
        await relay.close()
    assert [e.id for e in seen if isinstance(e, StateEvent)] == expected
    assert [e.id for e in seen] == sorted({e.id for e in seen})


async def test_a_token_is_sent_and_its_absence_is_unauthorized(settings: Settings) -> None:
    async with live_server(dataclasses.replace(settings, token="s3cret")) as url:
        async with AsyncClient(url, token="s3cret") as allowed:
            job = await allowed.submit(T + "add", 1, 2)
            assert await job.result(timeout_s=10) == 3
        async with AsyncClient(url, token="wrong") as refused:
            with pytest.raises(Unauthorized) as caught:
                await refused.job(job.id).status()
            assert caught.value.status == 401
            with pytest.raises(Unauthorized):
                await refused.job(job.id).result(timeout_s=5)


async def test_many_waits_share_one_client(aclient: AsyncClient) -> None:
    jobs = [await aclient.submit(T + "add", n, n) for n in range(10)]
    results = await asyncio.gather(*(j.result(timeout_s=20) for j in jobs))
    assert results == [2 * n for n in range(10)]


def test_mypy_checks_a_task_s_submit_against_its_signature(tmp_path: Path) -> None:
    checked = tmp_path / "use_tasks.py"
    checked.write_text(
        textwrap.dedent(
            """
            from tests.sample_tasks import add
            from service.client import Client

            good: int = add.submit(1, 2).result()
            add.submit("one", 2)
            Client().submit(add, 1)
            wrong: str = add.with_options(priority=1).submit(1, 2).result()
            """
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(checked)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert [line.split(":")[1] for line in errors] == ["6", "7", "8"], done.stdout
    assert 'incompatible type "str"; expected "int"' in errors[0]


async def test_a_draining_service_answers_shutting_down(
    service_process: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    service = service_process(CONVEYOR_SHUTDOWN_GRACE_S="30")
    service.start()
    await service.wait_ready()
    async with AsyncClient(service.url) as client:
        running = await client.submit(T + "sleep", 60)
        async for event in running.events():
            if isinstance(event, StateEvent) and event.state is JobState.RUNNING:
                break
        assert service.proc is not None
        service.proc.send_signal(signal.SIGTERM)  # drains: the running job has 30 s
        await wait_until(lambda: _draining(client), what="the service to drain", timeout_s=10)
        with pytest.raises(ShuttingDown) as refused:
            await client.submit(T + "add", 1, 2)
        assert refused.value.status == 503 and refused.value.retry_after_s == 5
        assert isinstance(refused.value, ServiceUnavailable)
        assert (await running.cancel()).state is JobState.CANCELED  # cancels still work
    assert service.proc.wait(20) == 0


async def _draining(client: AsyncClient) -> bool:
    status: str = (await client.health())["status"]
    return status == "draining"


async def test_a_slow_consumer_gets_the_wait_timeout_not_a_cancellation(
    aclient: AsyncClient,
) -> None:
    job = await aclient.submit(T + "steps", 20, 0.1)
    with pytest.raises(WaitTimeout):
        async for _ in job.events(timeout_s=0.5):
            await asyncio.sleep(0.2)  # the caller's own work between events is its own
    assert (await job.result(timeout_s=20)) == 20

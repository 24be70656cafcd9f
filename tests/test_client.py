"""``service.client.Client`` against a real service: a hypercorn subprocess on a free port.

The client blocks, so the service runs in a process of its own (shared by this module), as a
user runs it; its access log tells what requests it really received.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.client import (
    ApiError,
    BadRequest,
    Client,
    Conflict,
    ConnectionFailed,
    ConveyorError,
    InvalidArguments,
    JobCanceled,
    JobFailed,
    LogEvent,
    NotFound,
    ProgressEvent,
    RequestError,
    StateEvent,
    UnknownTask,
    WaitTimeout,
    call,
    group,
    stream,
)
from service.jobs import JobState

from . import sample_tasks
from .conftest import TASKS, ServiceProcess, SharedService, http_server, lines_in, wait_for
from .relay import relay_thread

T = f"{TASKS}."


@pytest.fixture
def client(shared_service: SharedService) -> Iterator[Client]:
    with Client(shared_service.url) as made:
        yield made


def marker() -> str:
    return uuid.uuid4().hex


# -- submit and result --------------------------------------------------------------------------


def test_submit_then_result(client: Client) -> None:
    job = client.submit(T + "add", 2, 3)
    assert job.created is True
    assert job.submitted is not None and job.submitted.state is JobState.QUEUED
    assert job.result(timeout_s=10) == 5
    assert job.status().state is JobState.SUCCEEDED


def test_a_task_function_submits_with_its_own_signature(
    client: Client, shared_service: SharedService, monkeypatch: pytest.MonkeyPatch
) -> None:
    total: int = client.submit(sample_tasks.add, 4, y=5).result(timeout_s=10)  # typed by mypy
    assert total == 9
    assert client.submit(sample_tasks.async_add, 1, 2).result(timeout_s=10) == 3
    monkeypatch.setenv("CONVEYOR_URL", shared_service.url)  # the default client's service
    assert sample_tasks.add.submit(20, 22).result(timeout_s=10) == 42
    assert sample_tasks.add(1, 1) == 2  # still a plain call in the caller's process


def test_options_never_collide_with_the_task_s_own_parameters(client: Client) -> None:
    job = client.with_options(priority=7, key=marker(), queue="reports", timeout_s=30).submit(
        T + "echo", "a", key="the task's key", priority="the task's priority"
    )
    record = job.status()
    assert record.kwargs == {"key": "the task's key", "priority": "the task's priority"}
    assert record.args == ["a"]
    assert record.key is not None and record.key != "the task's key"
    assert record.options.priority == 7 and record.options.queue == "reports"
    assert record.options.timeout_s == 30
    job.result(timeout_s=10)


def test_every_job_option_reaches_the_job(client: Client) -> None:
    options = client.with_options(
        soft_timeout_s=20, timeout_s=30, max_retries=3, retry_backoff_s=0.5,
        retry_backoff_max_s=9, retry_on=[ConnectionError, "HTTPStatusError"],
        memory_limit_mb=512,
    )  # fmt: skip
    record = options.submit(T + "add", 1, 1).status()
    assert record.options.soft_timeout_s == 20 and record.options.max_retries == 3
    assert record.options.retry_backoff_s == 0.5 and record.options.retry_backoff_max_s == 9
    assert record.options.retry_on == ("ConnectionError", "HTTPStatusError")
    assert record.options.memory_limit_mb == 512
    with pytest.raises(TypeError, match="colour"):
        client.with_options(colour="red")  # type: ignore[call-arg]


def test_a_job_that_depends_on_handles_waits_for_them(client: Client, tmp_path: Path) -> None:
    go = tmp_path / "go"
    first = client.submit(T + "gate", str(go))
    second = client.submit(T + "add", 1, 1)
    after = client.with_options(depends_on=[first, second.id]).submit(T + "add", 2, 2)
    record = after.status()
    assert record.state is JobState.WAITING and record.depends_on == (first.id, second.id)
    go.touch()
    assert after.result(timeout_s=10) == 4
    failing = client.submit(T + "fail", "no")
    anyway = client.with_options(depends_on=[failing], on_dependency_failure="run")
    assert anyway.submit(T + "add", 3, 3).result(timeout_s=10) == 6


def test_chains_and_groups_run_as_one_workflow_with_its_result(client: Client) -> None:
    flow = client.chain(
        call(T + "add", 1, 2),
        group(call(T + "add", 10), call(T + "add", 20), then=call(T + "echo")),
    )
    assert [job.status().task for job in flow.jobs] == [T + "add"] * 3 + [T + "echo"]
    assert flow.result(timeout_s=20) == {"args": [[13, 23]], "kwargs": {}}
    assert flow.status().state == "succeeded" and len(flow.status().edges) == 4
    alone = client.group(call(T + "add", 1, 1), call(T + "add", 2, 2).without_input())
    assert alone.result(timeout_s=20) == [2, 4]


def test_a_failed_workflow_raises_for_its_failed_step_and_cancel_stops_it(
    client: Client,
) -> None:
    failing = client.chain(call(T + "fail", "no"), call(T + "echo"))
    with pytest.raises(JobFailed) as caught:
        failing.result(timeout_s=20)
    assert caught.value.job.task == T + "fail"
    sleeping = client.chain(call(T + "sleep", 30), call(T + "echo"))
    canceled = sleeping.cancel()
    assert canceled.state == "canceled"
    assert {job.state for job in canceled.jobs} == {JobState.CANCELED}
    with pytest.raises(JobCanceled):
        sleeping.result(timeout_s=10)
    with pytest.raises(RequestError, match="key"):
        client.chain(call(T + "add", 1, 1).with_options(key="k"))


def test_delay_and_run_at_schedule_the_job(client: Client) -> None:
    delayed = client.with_options(delay_s=3600).submit(T + "add", 1, 2).status()
    assert delayed.state is JobState.SCHEDULED
    assert delayed.scheduled_at is not None and delayed.scheduled_at > time.time() + 3500
    when = datetime.now(UTC) + timedelta(days=1)
    at = client.with_options(run_at=when).submit(T + "add", 1, 2).status()
    assert at.scheduled_at == pytest.approx(when.timestamp(), abs=0.01)
    naive_local = datetime.now() + timedelta(hours=2)  # naive: local time, as datetime reads it
    local = client.with_options(run_at=naive_local).submit(T + "add", 1, 2).status()
    assert local.scheduled_at == pytest.approx(naive_local.timestamp(), abs=0.01)
    for job_id in (delayed.id, at.id, local.id):
        assert client.cancel(job_id).state is JobState.CANCELED


def test_a_key_returns_the_unfinished_job_that_holds_it(client: Client) -> None:
    key = marker()
    first = client.with_options(key=key).submit(T + "sleep", 30)
    again = client.with_options(key=key).submit(T + "sleep", 30)
    assert (first.created, again.created) == (True, False)
    assert again.id == first.id
    first.cancel()


def test_an_idempotency_key_makes_a_retried_submit_safe(client: Client) -> None:
    once = marker()
    first = client.with_options(idempotency_key=once).submit(T + "add", 1, 2)
    again = client.with_options(idempotency_key=once).submit(T + "add", 1, 2)
    assert again.id == first.id and again.created is False
    with pytest.raises(ConveyorError, match="Idempotency-Key") as refused:
        client.with_options(idempotency_key=once).submit(T + "add", 9, 9)
    assert refused.value.__class__.__name__ == "IdempotencyKeyReused"


def test_submit_many_uses_one_batch_request(client: Client, shared_service: SharedService) -> None:
    tag = marker()
    before = shared_service.logged_so_far()
    jobs = client.with_options(priority=2).submit_many(
        [
            call(T + "echo", tag, 1),
            sample_tasks.add.call(2, 3),
            call(T + "echo", tag, 2).with_options(priority=9),
        ]
    )
    assert [j.result(timeout_s=10) for j in jobs] == [
        {"args": [tag, 1], "kwargs": {}}, 5, {"args": [tag, 2], "kwargs": {}},
    ]  # fmt: skip
    assert [j.status().options.priority for j in jobs] == [2, 2, 9]
    posts = [
        r
        for r in shared_service.requests()[before : shared_service.logged_so_far()]
        if r.startswith("POST")
    ]
    assert posts == ["POST /jobs/batch"]


# -- outcomes -----------------------------------------------------------------------------------


def test_a_failed_job_raises_job_failed_with_the_task_s_error(client: Client) -> None:
    job = client.submit(T + "fail", "no paper in tray 2")
    with pytest.raises(JobFailed) as failed:
        job.result(timeout_s=10)
    assert failed.value.error_type == "ValueError"
    assert failed.value.message == "no paper in tray 2"
    assert failed.value.traceback is not None and "raise ValueError" in failed.value.traceback
    assert failed.value.job.id == job.id and failed.value.job.state is JobState.FAILED


def test_a_job_canceled_while_it_runs_raises_job_canceled(client: Client, tmp_path: Path) -> None:
    started = tmp_path / "started"
    job = client.submit(T + "sleep", 60, str(started))
    for event in job.events():
        if isinstance(event, StateEvent) and event.state is JobState.RUNNING:
            break
    canceled = client.cancel(job.id)
    assert canceled.state is JobState.CANCELED
    with pytest.raises(JobCanceled) as caught:
        job.result(timeout_s=10)
    assert caught.value.job.id == job.id


def test_waiting_too_long_raises_a_timeout_error_and_the_job_goes_on(client: Client) -> None:
    job = client.submit(T + "sleep", 30)
    with pytest.raises(TimeoutError) as waited:  # WaitTimeout is a TimeoutError
        job.result(timeout_s=0.3)
    assert isinstance(waited.value, WaitTimeout) and job.id in str(waited.value)
    assert job.status().state in (JobState.QUEUED, JobState.RUNNING)
    job.cancel()


def sent_requests(client: Client) -> list[httpx.Request]:
    """Every request ``client`` sends from now on, as it sends it (an httpx event hook on its
    own connection pool)."""
    sent: list[httpx.Request] = []
    client._http.event_hooks["request"].append(sent.append)
    return sent


def test_result_is_one_long_poll_request_however_long_the_job_runs(
    client: Client, shared_service: SharedService
) -> None:
    quick = client.submit(T + "add", 2, 2)
    slow = client.submit(T + "steps", 20, 0.1)  # two seconds of progress events
    sent = sent_requests(client)
    before = len(shared_service.requests())
    assert quick.result(timeout_s=20) == 4
    assert slow.result(timeout_s=20) == 20
    assert client.job(quick.id).result() == 4  # no deadline: a long poll of LONG_POLL_S
    reads = [f"GET /jobs/{quick.id}", f"GET /jobs/{slow.id}", f"GET /jobs/{quick.id}"]

    def seen() -> list[str]:
        return [r for r in shared_service.requests()[before:] if quick.id in r or slow.id in r]

    wait_for(lambda: len(seen()) >= 3, "the access log to show the reads")  # written after them
    # one request a wait, answered at the job's end: no stream, no poll loop
    assert seen() == reads
    assert [f"{r.method} {r.url.path}" for r in sent] == reads
    waits_s = [float(r.url.params["wait_s"]) for r in sent]
    assert 19 < waits_s[0] <= 20 and 19 < waits_s[1] <= 20  # what remained of the deadline
    assert waits_s[2] == stream.LONG_POLL_S
    # the client gives the answer the long poll and its own timeout_s (10 s) on top
    assert sent[2].extensions["timeout"]["read"] == stream.LONG_POLL_S + 10


def test_result_waits_through_retries_to_the_last_attempt(client: Client, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    job = client.with_options(max_retries=2, retry_backoff_s=0.2).submit(T + "flaky", str(runs), 2)
    assert job.result(timeout_s=20) == 3  # its two failures were not its end
    assert [a.outcome for a in job.status().attempts] == ["retried", "retried", "succeeded"]


def test_result_of_a_job_that_has_already_finished(client: Client) -> None:
    job = client.submit(T + "add", 5, 5)
    job.result(timeout_s=10)
    assert client.job(job.id).result(timeout_s=5) == 10  # a handle from its id alone


# -- events -------------------------------------------------------------------------------------


def test_events_are_typed_and_end_with_the_job(client: Client) -> None:
    job = client.submit(T + "chatter", "hello")
    events = list(job.events(timeout_s=20))
    states = [e.state for e in events if isinstance(e, StateEvent)]
    assert states == [JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED]
    assert all(e.job_id == job.id for e in events if isinstance(e, StateEvent | LogEvent))
    texts = [entry.text for e in events if isinstance(e, LogEvent) for entry in e.entries]
    assert any("hello" in text for text in texts)
    assert [e.id for e in events] == sorted({e.id for e in events})  # in order, no repeats


def test_progress_events_carry_the_progress(client: Client) -> None:
    job = client.submit(T + "steps", 3, 0.1)
    progress = [e.progress for e in job.events() if isinstance(e, ProgressEvent)]
    assert progress and progress[-1].done == 3 and progress[-1].total == 3


def test_events_resume_across_a_cut_connection_with_nothing_lost(
    shared_service: SharedService,
) -> None:
    target = int(shared_service.url.rsplit(":", 1)[1])
    with relay_thread(target) as relay, Client(f"http://127.0.0.1:{relay.port}") as through:
        job = through.submit(T + "steps", 30, 0.1)
        received = []
        for event in job.events(timeout_s=30):
            received.append(event)
            if len(received) == 4:
                relay.cut()  # the stream drops, and new connections are refused for a while
                threading.Timer(0.5, relay.restart).start()
    with Client(shared_service.url) as direct:
        everything = list(direct.job(job.id).events())
    assert [e.id for e in received] == [e.id for e in everything]
    assert isinstance(received[-1], StateEvent) and received[-1].state is JobState.SUCCEEDED


def test_events_after_an_id_start_there(client: Client) -> None:
    job = client.submit(T + "add", 1, 1)
    everything = list(job.events())
    later = list(job.events(after_id=everything[0].id))
    assert [e.id for e in later] == [e.id for e in everything[1:]]


# -- reading and managing -----------------------------------------------------------------------


def test_jobs_iterates_every_page_lazily(client: Client, shared_service: SharedService) -> None:
    tag = marker()
    made = [client.submit(T + "echo", tag, n).id for n in range(7)]

    def pages_read_since(before: int, at_least: int) -> int:
        # the access log has a request once its answer is sent: the last one may come late
        def read() -> int:
            return shared_service.requests()[before:].count("GET /jobs")

        wait_for(lambda: read() >= at_least, f"{at_least} page reads in the access log")
        return read()

    before = shared_service.logged_so_far()
    listed = [job.id for job in client.jobs(text=tag, page_size=3)]
    assert listed == list(reversed(made))  # newest first
    assert pages_read_since(before, 3) == 3
    before = shared_service.logged_so_far()
    first_two = client.jobs(text=tag, page_size=3)
    assert [next(first_two).id, next(first_two).id] == listed[:2]
    assert pages_read_since(before, 1) == 1  # the next page is read when the loop gets there


def test_jobs_filters_by_state_task_and_queue(client: Client) -> None:
    job = client.with_options(queue="filters-" + marker()[:8]).submit(T + "add", 1, 2)
    job.result(timeout_s=10)
    queue = job.status().queue
    found = list(client.jobs(state=["succeeded"], task=T + "add", queue=queue))
    assert [j.id for j in found] == [job.id]
    assert list(client.jobs(state="failed", queue=queue)) == []


def test_tasks_describe_what_the_service_serves(client: Client) -> None:
    tasks = {t.name: t for t in client.tasks()}
    add = tasks[T + "add"]
    assert [(p.name, p.type, p.required) for p in add.params] == [
        ("x", "int", True), ("y", "int", True),
    ]  # fmt: skip
    assert tasks[T + "report"].options.queue == "reports"
    assert tasks[T + "async_add"].is_async


def test_cancel_retry_and_logs(client: Client) -> None:
    job = client.submit(T + "print_lines", 5)
    job.result(timeout_s=10)
    logs = job.logs()
    assert [e.text for e in logs.entries] == [f"line {n}" for n in range(5)]
    assert [e.text for e in job.logs(tail=2).entries] == ["line 3", "line 4"]
    with pytest.raises(Conflict) as conflict:
        job.cancel()
    assert conflict.value.state == "succeeded" and conflict.value.status == 409
    failed = client.submit(T + "fail", "once")
    with pytest.raises(JobFailed):
        failed.result(timeout_s=10)
    assert failed.retry().state is JobState.QUEUED
    with pytest.raises(JobFailed):
        failed.result(timeout_s=10)
    assert [a.outcome for a in failed.status().attempts] == ["failed", "failed"]


def test_schedules_can_be_managed(client: Client) -> None:
    name = "client-" + marker()[:12]
    made = client.schedules.create(
        T + "add", "*/5 * * * *", args=[1, 2], schedule_id=name, priority=4
    )
    assert made.id == name and made.args == [1, 2] and made.options.priority == 4
    assert made.next_run_at is not None and made.next_run_at > time.time()
    assert name in [s.id for s in client.schedules.list()]
    assert client.schedules.get(name).cron == "*/5 * * * *"
    client.schedules.delete(name)
    with pytest.raises(NotFound):
        client.schedules.get(name)


def test_a_schedule_pauses_resumes_and_lists_the_jobs_it_made(client: Client) -> None:
    name = "client-" + marker()[:12]
    made = client.schedules.create(T + "tick", "* * * * * *", args=[name], schedule_id=name)
    assert made.paused is False
    wait_for(lambda: any(client.jobs(schedule_id=name)), what="a job of the schedule")
    paused = client.schedules.pause(name)
    assert (paused.paused, paused.next_run_at) == (True, None)
    assert client.schedules.pause(name).paused is True  # already paused: no change
    assert client.schedules.get(name).paused is True
    made_jobs = list(client.jobs(schedule_id=name, page_size=1))
    assert made_jobs and {(j.schedule_id, j.args[0]) for j in made_jobs} == {(name, name)}
    assert list(client.jobs(schedule_id="no-" + name)) == []
    resumed = client.schedules.resume(name)
    assert resumed.paused is False and resumed.next_run_at is not None
    client.schedules.delete(name)
    with pytest.raises(NotFound):
        client.schedules.pause(name)


# -- errors -------------------------------------------------------------------------------------


def test_api_errors_carry_the_error_and_detail(client: Client) -> None:
    with pytest.raises(NotFound) as missing:
        client.job("no-such-job").status()
    assert missing.value.error == "not_found" and "no-such-job" in missing.value.detail
    with pytest.raises(UnknownTask) as unknown:
        client.submit("no.such.task")
    assert unknown.value.status == 422 and "no.such.task" in unknown.value.detail
    with pytest.raises(InvalidArguments) as bad_args:
        client.submit(T + "add", 1, z=2)
    fields = {f["field"]: f["message"] for f in bad_args.value.fields}
    assert fields == {"y": "required", "z": "not a parameter"}
    with pytest.raises(BadRequest) as bad_option:  # a time only the service reads
        client.with_options(run_at="next tuesday").submit(T + "add", 1, 2)
    assert bad_option.value.error == "invalid_request"
    assert all(isinstance(e, ConveyorError) for e in (missing.value, bad_args.value))


def test_an_unreachable_service_names_the_url_tried() -> None:
    with Client("http://127.0.0.1:9") as nowhere:
        with pytest.raises(ConnectionFailed) as failed:
            nowhere.submit(T + "add", 1, 2)
        assert "http://127.0.0.1:9" in str(failed.value)
        with pytest.raises(ConnectionFailed):
            nowhere.job("x").result(timeout_s=5)


def test_url_and_token_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_URL", "http://127.0.0.1:4321/")
    monkeypatch.setenv("CONVEYOR_TOKEN", "s3cret")
    with Client() as from_env:
        assert from_env.url == "http://127.0.0.1:4321"
        assert from_env.settings.headers()["Authorization"] == "Bearer s3cret"
    monkeypatch.delenv("CONVEYOR_URL")
    with Client(token="other") as default:
        assert default.url == "http://127.0.0.1:8000"
        assert default.settings.headers()["Authorization"] == "Bearer other"


# -- the public name ----------------------------------------------------------------------------


def test_conveyor_is_importable_by_the_name_installed() -> None:
    code = (
        "import sys\n"
        "from conveyor import task, progress, SoftTimeout, JobState\n"
        "assert 'httpx' not in sys.modules, 'task authors must not load the client'\n"
        "from conveyor import Client, AsyncClient, JobFailed, ConveyorError, call\n"
        "assert 'httpx' in sys.modules\n"
        "import service.client\n"
        "assert Client is service.client.Client\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_server_that_is_not_conveyor_gets_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "tasks").write_text("<html>a web page</html>")
    (tmp_path / "events").write_text("<html>another page</html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    with http_server(handler) as url, Client(url) as lost:
        with pytest.raises(ApiError) as unexpected:
            lost.tasks()
        assert unexpected.value.error == "unexpected_response"
        with pytest.raises(NotFound) as missing:
            lost.job("x").status()
        assert "404" in str(missing.value) and "\n" not in str(missing.value)
        with pytest.raises(ApiError, match="event stream"):
            list(Client.follow(lost, stream.StreamCursor(None, 0), stream.Deadline(5)))


def test_conveyor_names_every_public_part_of_the_client() -> None:
    import conveyor
    import service.client

    assert set(service.client.__all__) <= set(conveyor.__all__)
    assert all(
        getattr(conveyor, name) is getattr(service.client, name) for name in service.client.__all__
    )
    with pytest.raises(AttributeError, match="no_such_name"):
        conveyor.no_such_name  # noqa: B018


def test_a_wait_s_deadline_holds_while_the_service_does_not_answer(
    service_process: Callable[..., ServiceProcess],
) -> None:
    service = service_process()
    service.start()
    asyncio.run(service.wait_ready())
    assert service.proc is not None
    with Client(service.url) as client:
        job = client.submit(T + "sleep", 30)
        service.proc.send_signal(signal.SIGSTOP)  # it takes connections and never answers
        try:
            started = time.monotonic()
            with pytest.raises(WaitTimeout):
                job.result(timeout_s=1)
            assert time.monotonic() - started < 10  # the deadline, not the 60 s idle limit
        finally:
            service.proc.send_signal(signal.SIGCONT)


def test_a_wait_longer_than_the_service_s_cap_asks_again_until_the_job_ends(
    service_process: Callable[..., ServiceProcess],
) -> None:
    service = service_process(CONVEYOR_MAX_WAIT_S="0.5")
    service.start()
    asyncio.run(service.wait_ready())
    with Client(service.url) as client:
        job = client.submit(T + "sleep", 2)
        sent = sent_requests(client)
        assert job.result(timeout_s=30) == 2
        polls = list(sent)
        assert job.status().attempt == 1
    # each long poll was answered after 0.5 s with the job still running, and asked again
    assert len(polls) >= 3
    assert all(r.url.path == f"/jobs/{job.id}" and "wait_s" in r.url.params for r in polls)


def test_a_wait_outlives_a_restart_of_the_service(
    service_process: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    service = service_process(CONVEYOR_CONCURRENCY="1")
    service.start()
    asyncio.run(service.wait_ready())
    runs = tmp_path / "runs"
    with Client(service.url) as client, ThreadPoolExecutor(1) as waiter:
        job = client.submit(T + "sleep", 2, str(runs))
        sent = sent_requests(client)
        waited = waiter.submit(job.result, 60)
        # the pid written, not the file just made: its run must count
        wait_for(lambda: lines_in(runs) == 1 and bool(sent), "the job to run and the wait to ask")
        assert service.terminate() == 0  # stops the job and requeues it, as a deploy does
        service.start()
        asyncio.run(service.wait_ready())
        assert waited.result(30) == 2
        polls = list(sent)
        assert job.status().attempt == 2  # the run after the restart is the one waited for
    assert len(runs.read_text().split()) == 2
    assert len(polls) >= 2  # the wait asked again after the restart


def test_a_wait_is_asked_again_after_its_connection_drops_and_is_refused(
    service_process: Callable[..., ServiceProcess],
) -> None:
    service = service_process(CONVEYOR_MAX_WAIT_S="0.5")  # a first answer shows it got through
    service.start()
    asyncio.run(service.wait_ready())
    target = int(service.url.rsplit(":", 1)[1])
    with (
        relay_thread(target) as relay,
        Client(f"http://127.0.0.1:{relay.port}") as through,
        ThreadPoolExecutor(1) as waiter,
    ):
        job = through.submit(T + "sleep", 3)
        sent = sent_requests(through)
        waited = waiter.submit(job.result, 60)
        wait_for(lambda: len(sent) >= 2, "a first answer, and the wait asking again")
        relay.cut()  # drops the long poll in flight, and refuses new connections
        asked = len(sent)
        wait_for(lambda: len(sent) >= asked + 2, "the wait to be refused and ask again")
        relay.restart()
        assert waited.result(30) == 3


def test_a_proxy_s_502_during_a_wait_is_tried_again(client: Client) -> None:
    finished = client.submit(T + "add", 3, 4)
    finished.result(timeout_s=10)
    with httpx.Client(base_url=client.url) as raw:
        done = raw.get(f"/jobs/{finished.id}").json()
    answers = iter([{**done, "state": "running", "result": None}, 502, done])
    asked: list[str] = []

    class Flaky(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            answer = next(answers)
            body = b"" if isinstance(answer, int) else json.dumps(answer).encode()
            self.send_response(answer if isinstance(answer, int) else 200)  # 502: nginx
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with http_server(Flaky) as url, Client(url) as through:
        assert through.job(finished.id).result(timeout_s=10) == 7
    assert len(asked) == 3 and all(p.startswith(f"/jobs/{finished.id}?wait_s=") for p in asked)


def test_a_forked_child_s_waits_keep_their_deadline(client: Client) -> None:
    slow = client.submit(T + "sleep", 30)
    with pytest.raises(WaitTimeout):
        slow.result(timeout_s=0.2)  # the watchdog's thread now runs, in this process only
    child = multiprocessing.get_context("fork").Process(
        target=_wait_briefly, args=(client.url, slow.id)
    )
    child.start()
    child.join(20)
    slow.cancel()
    assert child.exitcode == 0


def _wait_briefly(url: str, job_id: str) -> None:
    with Client(url) as client:
        try:
            client.job(job_id).result(timeout_s=0.5)
        except WaitTimeout:
            os._exit(0)
    os._exit(1)


def test_a_reopened_stream_a_proxy_refuses_for_a_while_is_tried_again(tmp_path: Path) -> None:
    answers = iter([b"first", b"502", b"rest"])

    class Flaky(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answer = next(answers)
            if answer == b"502":
                self.send_response(502)  # nginx, while the service behind it restarts
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            data = {"job_id": "j", "task": "t", "from": None, "at": "2026-12-04T00:00:00Z"}
            if answer == b"first":
                events = [(1, {**data, "state": "queued"})]
            else:
                assert self.headers["Last-Event-ID"] == "1"
                events = [(2, {**data, "state": "succeeded"})]
            for number, body in events:
                line = f"id: {number}\nevent: state\ndata: {json.dumps(body)}\n\n"
                self.wfile.write(line.encode())
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, *args: Any) -> None:
            pass

    with http_server(Flaky) as url, Client(url) as through:
        events = list(through.job("j").events(timeout_s=10))
    assert [(e.id, e.state) for e in events if isinstance(e, StateEvent)] == [
        (1, JobState.QUEUED), (2, JobState.SUCCEEDED),
    ]  # fmt: skip


def test_values_that_cannot_be_sent_are_refused_here(client: Client) -> None:
    with pytest.raises(RequestError, match="finite"):
        client.with_options(delay_s=float("nan")).submit(T + "add", 1, 2)
    with pytest.raises(RequestError, match="JSON"):
        client.submit(T + "echo", {1, 2})
    with pytest.raises(RequestError, match="ASCII"):
        client.with_options(idempotency_key="ключ").submit(T + "add", 1, 2)
    with pytest.raises(TypeError, match="whole request"):
        call(T + "add", 1, 2).with_options(idempotency_key="k")
    with pytest.raises(NotFound):
        client.job("..").status()
    with pytest.raises(RequestError):
        Client("ftp://example")

"""Per-job logs: every kind of output captured per job, bounded, stored, served and streamed."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from httpx_sse import aconnect_sse

from service.jobs import Job, JobState
from service.loglines import (
    BATCH_CHARS,
    LINE_BYTES,
    MAX_LOG_LINE_CHARS,
    JobLog,
    Lines,
    line_text,
)
from service.logs import LogEntry
from service.pool import ProcessPool
from service.protocol import Log, encode
from service.recycling import WorkerLimits
from service.settings import Settings
from service.store.sqlite import SqliteStore

from .conftest import TASKS, finished, live_server, submit_job, wait_state, wait_until

T = "tests.sample_tasks."


class Logs:
    """What a pool reported through ``on_log``, by job."""

    def __init__(self) -> None:
        self.messages: dict[str, list[tuple[list[dict[str, Any]], int]]] = defaultdict(list)

    def __call__(self, job_id: str, entries: list[dict[str, Any]], dropped: int) -> None:
        self.messages[job_id].append((entries, dropped))

    def entries(self, job_id: str) -> list[dict[str, Any]]:
        return [entry for entries, _ in self.messages[job_id] for entry in entries]

    def texts(self, job_id: str) -> list[str]:
        return [entry["text"] for entry in self.entries(job_id)]


@pytest.fixture
def logs() -> Logs:
    return Logs()


@pytest.fixture
async def pool(logs: Logs) -> AsyncIterator[ProcessPool]:
    async with ProcessPool(
        1, [TASKS], grace_s=1.0, on_progress=lambda *_: None, on_log=logs
    ) as pool:
        yield pool


async def run(pool: ProcessPool, job_id: str, task: str, *args: Any) -> Any:
    worker = await pool.acquire()
    outcome = await pool.run(worker, job_id, T + task, list(args), {})
    assert outcome.ok, outcome.error
    return outcome.result


async def test_every_kind_of_output_is_captured_for_its_own_job(
    pool: ProcessPool, logs: Logs
) -> None:
    await run(pool, "job-1", "chatter", "first")
    await run(pool, "job-2", "chatter", "second")  # on the same worker
    for job_id, tag in (("job-1", "first"), ("job-2", "second")):
        by_text = {entry["text"]: entry for entry in logs.entries(job_id)}
        assert set(by_text) == {
            f"{tag} {what}"
            for what in (
                "print", "stdout write", "stderr", "logged", "echo", "raw fd", "printf",
                "unfinished",
            )
        }  # fmt: skip
        assert by_text[f"{tag} print"]["stream"] == "stdout"
        assert by_text[f"{tag} echo"]["stream"] == "stdout"  # a child process
        assert by_text[f"{tag} stderr"]["stream"] == "stderr"
        record = by_text[f"{tag} logged"]
        assert (record["stream"], record["level"], record["logger"]) == (
            "log",
            "WARNING",
            "tests.chatter",
        )
        assert all(isinstance(entry["at"], float) for entry in by_text.values())


async def test_a_child_left_running_never_writes_into_the_next_job(
    pool: ProcessPool, logs: Logs, tmp_path: Path
) -> None:
    go, done = str(tmp_path / "go"), str(tmp_path / "done")
    await run(pool, "job-1", "leave_a_writer", go, done)
    await run(pool, "job-2", "say_after_the_leftover", "mine", go, done)
    assert logs.texts("job-2") == ["mine"]
    assert "leftover" not in logs.texts("job-1")


async def test_what_a_forked_child_writes_or_logs_is_in_the_job_log(
    pool: ProcessPool, logs: Logs
) -> None:
    assert await run(pool, "job-1", "fork_a_child") == 0  # no lock inherited mid-use: no hang
    assert sorted((e["stream"], e["text"]) for e in logs.entries("job-1")) == [
        ("stderr", "[WARNING] tests.child: logged in a forked child"),
        ("stdout", "printed in a forked child"),
    ]


async def test_a_flood_is_coalesced_and_the_newest_lines_kept(logs: Logs) -> None:
    limits = WorkerLimits(max_log_lines=50)
    async with ProcessPool(
        1, [TASKS], grace_s=1.0, on_progress=lambda *_: None, on_log=logs, limits=limits
    ) as pool:
        await run(pool, "job-1", "print_lines", 20_000)
    messages = logs.messages["job-1"]
    assert len(messages) < 200  # batches, not a message per line
    assert all(len(entries) <= 50 for entries, _ in messages)
    delivered = len(logs.entries("job-1"))
    assert delivered + sum(dropped for _, dropped in messages) == 20_000  # every line counted
    assert logs.texts("job-1")[-50:] == [f"line {i}" for i in range(19_950, 20_000)]


# -- stored, served, streamed --------------------------------------------------------------


@pytest.fixture
async def small_logs(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A server that keeps 10 lines per job, on one worker."""
    bounded = dataclasses.replace(settings, max_log_lines=10, concurrency=1)
    async with live_server(bounded) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        yield client


async def test_logs_are_served_with_the_newest_lines_kept(small_logs: httpx.AsyncClient) -> None:
    job_id = await submit_job(small_logs, "print_lines", 25)
    await wait_state(small_logs, job_id, "succeeded")
    body = (await small_logs.get(f"/jobs/{job_id}/logs")).json()
    assert body["job_id"] == job_id and body["dropped"] == 15
    assert [e["text"] for e in body["entries"]] == [f"line {i}" for i in range(15, 25)]
    entry = body["entries"][0]
    assert (entry["stream"], entry["attempt"]) == ("stdout", 1)
    assert entry["at"].endswith("Z")
    tail = (await small_logs.get(f"/jobs/{job_id}/logs", params={"tail": 3})).json()
    assert [e["text"] for e in tail["entries"]] == ["line 22", "line 23", "line 24"]
    assert tail["dropped"] == 15


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/jobs/no-such-job/logs", 404),
        ("/jobs/{id}/logs?tail=0", 400),
        ("/jobs/{id}/logs?tail=many", 400),
        ("/jobs/{id}/logs?lines=3", 400),
    ],
)
async def test_bad_log_requests(client: httpx.AsyncClient, path: str, status: int) -> None:
    job_id = await submit_job(client, "add", 1, 2)
    response = await client.get(path.format(id=job_id))
    assert response.status_code == status


async def test_a_job_without_output_has_an_empty_log(client: httpx.AsyncClient) -> None:
    job_id = await submit_job(client, "add", 1, 2)
    await wait_state(client, job_id, "succeeded")
    body = (await client.get(f"/jobs/{job_id}/logs")).json()
    assert body == {"job_id": job_id, "entries": [], "dropped": 0}


async def read_job_stream(
    client: httpx.AsyncClient, job_id: str, into: list[tuple[str, dict[str, Any]]]
) -> None:
    """Read ``/jobs/<id>/events`` into ``into`` until the stream ends (after the job's end)."""
    async with aconnect_sse(client, "GET", f"/jobs/{job_id}/events", timeout=None) as source:
        async for sse in source.aiter_sse():
            if sse.data:
                into.append((sse.event, orjson.loads(sse.data)))


def log_texts(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [e["text"] for kind, data in events if kind == "log" for e in data["entries"]]


async def test_logs_stream_live_and_are_kept_up_to_a_cancel(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    job_id = await submit_job(client, "talk_until_stopped", str(started))
    seen: list[tuple[str, dict[str, Any]]] = []
    reader = asyncio.create_task(read_job_stream(client, job_id, seen))
    await wait_until(lambda: "still working" in log_texts(seen), what="the lines, live")
    assert (await client.get(f"/jobs/{job_id}")).json()["state"] == "running"
    await wait_until(started.exists, what="the job to sleep")
    assert (await client.post(f"/jobs/{job_id}/cancel")).status_code == 200
    await asyncio.wait_for(reader, 10)  # the stream ends with the job's end
    assert seen[-1][0] == "state" and seen[-1][1]["state"] == "canceled"
    assert log_texts(seen) == ["working", "still working", "cleaning up"]
    assert all(data["job_id"] == job_id for _, data in seen)
    streamed = [e for kind, data in seen if kind == "log" for e in data["entries"]]
    assert streamed[1]["level"] == "INFO" and streamed[1]["logger"] == "tests.talk"
    stored = (await client.get(f"/jobs/{job_id}/logs")).json()["entries"]
    assert stored == streamed


async def test_logs_are_kept_up_to_a_timeout(client: httpx.AsyncClient, tmp_path: Path) -> None:
    job_id = await submit_job(client, "talk_until_stopped", str(tmp_path / "s"), timeout_s=1)
    job = await finished(client, job_id)
    assert job["error"]["type"] == "Timeout"
    texts = [e["text"] for e in (await client.get(f"/jobs/{job_id}/logs")).json()["entries"]]
    assert texts == ["working", "still working", "cleaning up"]


async def test_job_output_stays_out_of_the_service_log(service_process: Any) -> None:
    service = service_process()
    service.start()
    await service.wait_ready()
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
        job_id = await submit_job(client, "chatter", "only-in-the-job-log")
        await wait_state(client, job_id, "succeeded")
        logs = (await client.get(f"/jobs/{job_id}/logs")).json()["entries"]
        assert len(logs) == 8
    assert service.terminate() == 0
    assert "only-in-the-job-log" not in service.log.read_text()


# -- the store -----------------------------------------------------------------------------


async def test_the_store_keeps_a_bounded_tail_and_forgets_it_on_request(tmp_path: Path) -> None:
    db = SqliteStore(str(tmp_path / "logs.db"), on_commit=lambda _: None, max_log_lines=3)
    async with db:
        await db.insert(Job("j", "t", [], {}, JobState.RUNNING, created_at=0.0, attempt=1))
        for batch in (["a", "b"], ["c", "d"], ["e"]):
            entries = [LogEntry(1.0, "stdout", text) for text in batch]
            await db.append_logs_soon("j", entries, dropped=1)
        entries, dropped = await db.job_logs("j")
        assert [e.text for e in entries] == ["c", "d", "e"]
        assert dropped == 2 + 3  # two pruned here, one dropped by the worker per batch
        assert entries[0] == LogEntry(1.0, "stdout", "c", attempt=1)
        log_events = [e for e in await db.events_after(0) if e.kind == "log"]
        assert len(log_events) == 2  # the first batch's event went with its lines
        assert [e["text"] for e in log_events[-1].data["entries"]] == ["e"]
        await db.delete_logs(["j"])
        assert await db.job_logs("j") == ([], 0)
        assert not [e for e in await db.events_after(0) if e.kind == "log"]


# -- lines and batches (pure) ---------------------------------------------------------------


def test_lines_are_cut_from_chunks_however_they_arrive() -> None:
    lines = Lines()
    assert lines.feed(b"one\r\ntw") == [b"one\r"]
    assert lines.feed(b"o\nthree") == [b"two"]
    assert lines.rest() == [b"three"] and lines.rest() == []
    assert [line_text(b"one\r"), line_text(b"caf\xc3\xa9 \xff")] == ["one", "café \ufffd"]


def test_a_line_without_end_is_cut_and_the_rest_of_it_skipped() -> None:
    lines = Lines()
    head = lines.feed(b"x" * (LINE_BYTES + 1))
    assert head == [b"x" * (LINE_BYTES + 1)]
    assert lines.feed(b"more of the same\nnext\n") == [b"next"]  # the long line's tail: gone
    assert line_text(head[0]).endswith("characters cut …]")
    assert len(line_text(head[0])) < MAX_LOG_LINE_CHARS + 40


def on_the_wire(messages: list[Log]) -> list[dict[str, Any]]:
    """Log messages as the service reads them off the pipe."""
    return [orjson.loads(encode(message)) for message in messages]


def test_pending_entries_keep_the_newest_and_count_the_rest() -> None:
    job = JobLog("job-1", max_lines=3)
    for i in range(5):
        job.add({"at": 0.0, "stream": "stdout", "text": f"line {i}"})
    [message] = on_the_wire(job.take())
    assert [e["text"] for e in message["entries"]] == ["line 2", "line 3", "line 4"]
    assert (message["t"], message["job"], message["dropped"]) == ("log", "job-1", 2)
    assert job.take() == []  # nothing pending, nothing dropped: no message


def test_pending_entries_leave_in_messages_of_bounded_size() -> None:
    job = JobLog("job-1", max_lines=100)
    for _ in range(10):
        job.add({"at": 0.0, "stream": "stdout", "text": "y" * (BATCH_CHARS // 4)})
    messages = on_the_wire(job.take())
    assert [len(m["entries"]) for m in messages] == [4, 4, 2]

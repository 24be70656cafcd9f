"""Priorities, named queues and their concurrency limits, per queue and per task."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.errors import SettingsError
from service.ready import ReadyQueue
from service.settings import Settings
from service.tasks import task

from .conftest import finished, live_server, submit_job, wait_state, wait_until

T = "tests.sample_tasks."


@pytest.fixture
async def one_worker(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    settings = dataclasses.replace(settings, concurrency=1)
    async with live_server(settings) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        yield client


async def jobs_in(client: httpx.AsyncClient, state: str) -> list[str]:
    page = (await client.get("/jobs", params={"state": state, "limit": 1000})).json()
    return sorted(job["id"] for job in page["jobs"])


async def hold_the_worker(client: httpx.AsyncClient, gate: str, *args: str) -> str:
    """A job that runs until ``gate`` exists, once it runs: jobs after it wait in the queue."""
    blocker = await submit_job(client, "gate", gate, *args)
    await wait_state(client, blocker, "running")
    return blocker


async def test_higher_priority_first_fifo_within(
    one_worker: httpx.AsyncClient, tmp_path: Path
) -> None:
    gate_file, marker_file = tmp_path / "open", tmp_path / "order"
    gate, marker = str(gate_file), str(marker_file)
    await hold_the_worker(one_worker, gate)
    labels = [("low-1", 0), ("high", 5), ("low-2", 0), ("mid", 1), ("below", -3), ("low-3", 0)]
    ids = [
        await submit_job(one_worker, "gate", gate, label, marker, priority=priority)
        for label, priority in labels
    ]
    gate_file.touch()
    for job_id in ids:
        await finished(one_worker, job_id)
    order = marker_file.read_text().split()
    assert order == ["high", "mid", "low-1", "low-2", "low-3", "below"]


async def test_the_priority_and_queue_are_the_jobs_options(client: httpx.AsyncClient) -> None:
    tasks = {t["name"]: t for t in (await client.get("/tasks")).json()["tasks"]}
    assert tasks[T + "report"]["options"]["queue"] == "reports"
    assert tasks[T + "report"]["options"]["priority"] == 3
    assert tasks[T + "one_at_a_time"]["concurrency"] == 1
    plain = (await client.get(f"/jobs/{await submit_job(client, 'add', 1, 2)}")).json()
    assert (plain["options"]["queue"], plain["options"]["priority"]) == ("default", 0)
    from_task = await submit_job(client, "report", "/nonexistent", timeout_s=0.5)
    job = (await client.get(f"/jobs/{from_task}")).json()
    assert (job["options"]["queue"], job["options"]["priority"]) == ("reports", 3)
    own = await submit_job(client, "report", "/nonexistent", queue="urgent", priority=-2)
    job = (await client.get(f"/jobs/{own}")).json()
    assert (job["options"]["queue"], job["options"]["priority"]) == ("urgent", -2)
    for job_id in (from_task, own):
        await client.post(f"/jobs/{job_id}/cancel")


@pytest.mark.parametrize(
    "fields",
    [
        {"priority": 1_000_001},
        {"priority": 1.5},
        {"priority": "high"},
        {"queue": ""},
        {"queue": "has space"},
        {"queue": "x" * 101},
    ],
)
async def test_bad_priority_or_queue_is_refused(
    client: httpx.AsyncClient, fields: dict[str, Any]
) -> None:
    response = await client.post("/jobs", json={"task": T + "add", "args": [1, 2], **fields})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_request" and next(iter(fields)) in body["detail"]
    assert (await client.get("/jobs")).json()["jobs"] == []


async def test_a_queue_at_its_limit_does_not_hold_back_other_queues(
    settings: Settings, tmp_path: Path
) -> None:
    settings = dataclasses.replace(settings, concurrency=3, queues={"reports": 1})
    gate_file = tmp_path / "open"
    gate = str(gate_file)
    async with live_server(settings) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        reports = [await submit_job(client, "report", gate) for _ in range(3)]
        await wait_until(lambda: _count(client, "running", 1), what="one report running")
        # a default-queue job behind three reports runs at once on a free worker
        quick = await submit_job(client, "add", 2, 3)
        assert (await finished(client, quick))["result"] == 5
        assert len(await jobs_in(client, "running")) == 1
        assert len(await jobs_in(client, "queued")) == 2
        health = (await client.get("/health")).json()
        assert health["jobs"]["queued_by_queue"] == {"reports": 2}
        gate_file.touch()
        for job_id in reports:
            assert (await finished(client, job_id))["state"] == "succeeded"


async def test_a_task_concurrency_limit(settings: Settings, tmp_path: Path) -> None:
    gate_file = tmp_path / "open"
    gate = str(gate_file)
    async with live_server(settings) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        first = await submit_job(client, "one_at_a_time", gate)
        second = await submit_job(client, "one_at_a_time", gate)
        await wait_state(client, first, "running")
        # the other worker is free: another task runs, the second one_at_a_time waits
        assert (await finished(client, await submit_job(client, "add", 1, 1)))["result"] == 2
        assert (await client.get(f"/jobs/{second}")).json()["state"] == "queued"
        gate_file.touch()
        assert (await finished(client, second))["state"] == "succeeded"


async def test_priorities_survive_a_restart(settings: Settings, tmp_path: Path) -> None:
    settings = dataclasses.replace(settings, concurrency=1)
    gate_file, marker_file = tmp_path / "open", tmp_path / "order"
    gate, marker = str(gate_file), str(marker_file)
    async with live_server(settings) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        blocker = await hold_the_worker(client, gate, "blocker", marker)
        low = await submit_job(client, "gate", gate, "low", marker)
        high = await submit_job(client, "gate", gate, "high", marker, priority=9)
    gate_file.touch()  # the stop requeued the blocker: all three wait for the next start
    async with live_server(settings) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        for job_id in (blocker, low, high):
            await finished(client, job_id)
    assert marker_file.read_text().split() == ["high", "blocker", "low"]


async def _count(client: httpx.AsyncClient, state: str, expected: int) -> bool:
    return len(await jobs_in(client, state)) == expected


def test_queue_limits_setting() -> None:
    settings = Settings.from_env({"CONVEYOR_QUEUES": "default=4, reports=1"})
    assert settings.queues == {"default": 4, "reports": 1}
    for bad in ("default", "default=0", "a=1,a=2", "bad name=1", "x=y"):
        with pytest.raises(SettingsError, match="CONVEYOR_QUEUES"):
            Settings.from_env({"CONVEYOR_QUEUES": bad})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": True}, "concurrency"),
        ({"priority": 2.5}, "priority"),
        ({"queue": "no spaces please"}, "queue"),
    ],
)
def test_task_options_are_checked(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        task(**options)


async def test_ready_queue_prefers_any_queue_under_its_limit() -> None:
    ready = ReadyQueue({"reports": 1}, {"single": 1})
    for index in range(3):
        ready.put(f"r{index}", "build", "reports", 10)
    ready.put("s1", "single", "default", 5)
    ready.put("s2", "single", "default", 5)
    ready.put("d1", "other", "default", 0)
    taken = [ready.take() for _ in range(4)]
    assert [e.job_id if e else None for e in taken] == ["r0", "s1", "d1", None]
    assert ready.qsize() == 3 and ready.sizes() == {"reports": 2, "default": 1}
    first = taken[0]
    assert first is not None
    ready.release(first)
    assert (await asyncio.wait_for(ready.get(), 1)).job_id == "r1"


async def test_a_job_canceled_then_retried_while_queued_runs_once(
    one_worker: httpx.AsyncClient, tmp_path: Path
) -> None:
    gate_file, marker_file = tmp_path / "open", tmp_path / "runs"
    gate, marker = str(gate_file), str(marker_file)
    await hold_the_worker(one_worker, gate)
    job_id = await submit_job(one_worker, "gate", gate, "run", marker)
    assert (await one_worker.post(f"/jobs/{job_id}/cancel")).json()["state"] == "canceled"
    assert (await one_worker.post(f"/jobs/{job_id}/retry")).json()["state"] == "queued"
    health = (await one_worker.get("/health")).json()
    assert health["jobs"]["queued"] == 1  # one place in the queue, not two
    gate_file.touch()
    assert (await finished(one_worker, job_id))["state"] == "succeeded"
    assert (await finished(one_worker, await submit_job(one_worker, "add", 1, 1)))["result"] == 2
    assert marker_file.read_text().split() == ["run"]


def test_the_ready_queue_holds_a_job_once() -> None:
    ready = ReadyQueue({}, {})
    ready.put("a", "t", "default", 0)
    ready.put("a", "t", "default", 5)  # back before its entry was taken: keeps its place
    assert ready.qsize() == 1
    entry = ready.take()
    assert entry is not None and entry.job_id == "a" and ready.take() is None
    ready.put("a", "t", "default", 0)  # taken, then due again (a retry): a new entry
    assert ready.qsize() == 1

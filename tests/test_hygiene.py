"""Worker hygiene: result size limit, recycling by jobs and memory, a job's memory limit."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from service.errors import SettingsError
from service.memory import resident_mb
from service.pool import Outcome, ProcessPool
from service.recycling import WorkerLimits, recycle
from service.settings import Settings
from service.tasks import task

from .conftest import TASKS, finished, live_server, process_gone, submit_job, wait_until

T = "tests.sample_tasks."


def pool_of_one(**limits: Any) -> ProcessPool:
    return ProcessPool(
        1, [TASKS], grace_s=1.0, on_progress=lambda *_: None, limits=WorkerLimits(**limits)
    )


async def run(pool: ProcessPool, task: str, *args: Any, **options: Any) -> Outcome:
    worker = await pool.acquire()
    return await pool.run(worker, "job-1", T + task, list(args), {}, **options)


# -- results -------------------------------------------------------------------------------


async def test_a_result_over_the_limit_fails_clearly_in_the_worker() -> None:
    async with pool_of_one(max_result_bytes=1000) as pool:
        outcome = await run(pool, "big_result", 2000)
        assert outcome.error is not None and outcome.error.type == "ResultTooLarge"
        assert outcome.error.message == (
            "the result is 2002 bytes as JSON; the limit is 1000 bytes (CONVEYOR_MAX_RESULT_BYTES)"
        )
        assert (await run(pool, "big_result", 998)).result == "x" * 998  # 1000 bytes: fine


async def test_the_result_limit_is_a_setting(settings: Settings) -> None:
    limited = dataclasses.replace(settings, max_result_bytes=100)
    async with live_server(limited) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        job = await finished(client, await submit_job(client, "big_result", 200))
        assert (job["state"], job["error"]["type"]) == ("failed", "ResultTooLarge")
        assert "the limit is 100 bytes" in job["error"]["message"]


# -- recycling -----------------------------------------------------------------------------


async def test_a_worker_is_recycled_after_max_jobs_and_capacity_stays() -> None:
    async with pool_of_one(max_jobs=2) as pool:
        pids = [(await run(pool, "pid")).result for _ in range(5)]
        assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
        assert len(set(pids)) == 3
        assert pool.status()["recycled"] == {"jobs": 2, "memory": 0}
        await wait_until(lambda: process_gone(pids[0]), what="the recycled worker to exit")
        await wait_until(lambda: pool.status()["alive"] == 1, what="one worker, ready")


async def test_a_worker_that_grew_past_the_memory_limit_is_recycled() -> None:
    async with pool_of_one(max_memory_mb=200) as pool:
        fresh = await pool.acquire()
        resident = resident_mb(fresh.pid)
        assert resident is not None and resident < 200  # a new worker is well below
        pool.release(fresh)
        leaky = (await run(pool, "leak", 250)).result
        after = (await run(pool, "pid")).result
        assert after != leaky
        assert (await run(pool, "pid")).result == after  # a small worker stays
        assert pool.status()["recycled"] == {"jobs": 0, "memory": 1}


def test_the_recycling_decision() -> None:
    limits = WorkerLimits(max_jobs=3, max_memory_mb=100)
    assert recycle(limits, 2, 99.0) is None
    assert recycle(limits, 2, None) is None  # unknown size: no recycling for memory
    jobs = recycle(limits, 3, 10.0)
    assert (
        jobs is not None and jobs.kind == "jobs" and "CONVEYOR_MAX_JOBS_PER_WORKER" in jobs.reason
    )
    memory = recycle(limits, 1, 150.4)
    assert memory is not None and memory.kind == "memory"
    assert memory.reason == "it holds 150 MB, over CONVEYOR_MAX_WORKER_MEMORY_MB (100)"
    assert recycle(WorkerLimits(), 10**6, 10.0**6) is None  # 0: no limits


async def test_recycling_shows_in_health(settings: Settings) -> None:
    recycling = dataclasses.replace(settings, max_jobs_per_worker=1, concurrency=1)
    async with live_server(recycling) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        for _ in range(2):
            assert (await finished(client, await submit_job(client, "add", 1, 1)))["result"] == 2

        async def recycled() -> Any:
            workers = (await client.get("/health")).json()["workers"]
            return workers if workers["recycled"]["jobs"] == 2 else None

        workers = await wait_until(recycled, what="two recycled workers in /health")
        assert workers["size"] == 1


# -- a job's memory limit ------------------------------------------------------------------


async def test_an_allocation_over_the_job_limit_fails_the_job_not_the_worker() -> None:
    async with pool_of_one() as pool:
        pid = (await run(pool, "pid")).result
        failed = await run(pool, "allocate", 300, memory_limit_mb=100)
        assert failed.error is not None and failed.error.type == "MemoryError"
        # the kernel's refusal comes as a bare MemoryError: the message names the limit
        assert failed.error.message == (
            "the job went over its memory limit of 100 MB (memory_limit_mb)"
        )
        assert (await run(pool, "allocate", 300)).result == 300  # the limit was lifted
        assert (await run(pool, "allocate", 20, memory_limit_mb=100)).result == 20
        assert (await run(pool, "pid")).result == pid  # the same worker all along


async def test_progress_is_reported_under_a_tight_memory_limit() -> None:
    seen: list[Any] = []
    async with ProcessPool(
        1, [TASKS], grace_s=1.0, on_progress=lambda *update: seen.append(update)
    ) as pool:
        # held-back updates are sent by a thread the worker started before the job: starting
        # one under the limit could fail, or hang the job
        assert (await run(pool, "steps", 20, 0.005, memory_limit_mb=4)).result == 20
    assert seen[-1][1].done == 20


async def test_a_worker_that_dies_under_a_memory_limit_says_so() -> None:
    async with pool_of_one() as pool:
        outcome = await run(pool, "abort", memory_limit_mb=50)
        assert outcome.error is not None and outcome.error.type == "WorkerCrashed"
        assert "SIGABRT" in outcome.error.message
        assert "memory_limit_mb=50" in outcome.error.message
        assert (await run(pool, "add", 1, 2)).result == 3  # replaced


@pytest.fixture
async def one_worker(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    single = dataclasses.replace(settings, concurrency=1)
    async with live_server(single) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        yield client


async def test_memory_limit_mb_per_task_and_per_job(one_worker: httpx.AsyncClient) -> None:
    client = one_worker
    by_task = await finished(client, await submit_job(client, "allocate_limited", 200))
    assert (by_task["state"], by_task["error"]["type"]) == ("failed", "MemoryError")
    assert by_task["options"]["memory_limit_mb"] == 64
    assert "memory limit of 64 MB" in by_task["error"]["message"]
    by_job = await finished(client, await submit_job(client, "allocate", 200, memory_limit_mb=50))
    assert (by_job["state"], by_job["error"]["type"]) == ("failed", "MemoryError")
    assert "memory limit of 50 MB" in by_job["error"]["message"]
    roomy = await finished(
        client, await submit_job(client, "allocate_limited", 100, memory_limit_mb=400)
    )
    assert (roomy["state"], roomy["result"]) == ("succeeded", 100)  # the job's value wins
    health = await client.get("/health")
    assert health.status_code == 200 and health.json()["workers"]["recycled"]["memory"] == 0


@pytest.mark.parametrize("value", [0, -5, 1.5, "64", True])
async def test_a_bad_memory_limit_is_refused(client: httpx.AsyncClient, value: Any) -> None:
    response = await client.post(
        "/jobs", json={"task": T + "allocate", "args": [1], "memory_limit_mb": value}
    )
    assert response.status_code == 400


@pytest.mark.parametrize("value", [0, -1, 2.5, True, "64"])
def test_a_bad_memory_limit_on_a_task_is_refused(value: Any) -> None:
    with pytest.raises(ValueError, match="memory_limit_mb"):
        task(memory_limit_mb=value)


# -- settings ------------------------------------------------------------------------------


def test_the_worker_settings_and_their_defaults() -> None:
    defaults = Settings.from_env({})
    assert (defaults.max_log_lines, defaults.max_result_bytes) == (1000, 1024 * 1024)
    assert (defaults.max_jobs_per_worker, defaults.max_worker_memory_mb) == (0, 0)
    assert defaults.worker_stop_timeout_s == 5.0
    settings = Settings.from_env(
        {
            "CONVEYOR_MAX_LOG_LINES": "50",
            "CONVEYOR_MAX_RESULT_BYTES": "2048",
            "CONVEYOR_MAX_JOBS_PER_WORKER": "100",
            "CONVEYOR_MAX_WORKER_MEMORY_MB": "512",
            "CONVEYOR_WORKER_STOP_TIMEOUT_S": "0.5",
        }
    )
    assert (settings.max_log_lines, settings.max_result_bytes) == (50, 2048)
    assert (settings.max_jobs_per_worker, settings.max_worker_memory_mb) == (100, 512)
    assert settings.worker_stop_timeout_s == 0.5


@pytest.mark.parametrize(
    ("key", "text"),
    [
        ("CONVEYOR_MAX_LOG_LINES", "0"),
        ("CONVEYOR_MAX_LOG_LINES", "100001"),
        ("CONVEYOR_MAX_RESULT_BYTES", "0"),
        ("CONVEYOR_MAX_RESULT_BYTES", str(16 * 1024 * 1024)),
        ("CONVEYOR_MAX_JOBS_PER_WORKER", "-1"),
        ("CONVEYOR_MAX_WORKER_MEMORY_MB", "lots"),
        ("CONVEYOR_WORKER_STOP_TIMEOUT_S", "-1"),
    ],
)
def test_a_bad_worker_setting_is_named(key: str, text: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({key: text})
    assert str(caught.value).startswith(f"{key}: expected ")

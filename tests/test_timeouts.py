"""Hard and soft timeouts, end to end: real workers that really get killed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import finished, process_gone, submit_job, wait_until

T = "tests.sample_tasks."


async def test_a_hard_timeout_kills_the_process_tree(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pids"
    job_id = await submit_job(client, "spawn_tree", str(pidfile), timeout_s=1)
    await wait_until(Path(str(pidfile) + ".ready").exists, what="the job's children")
    children = [int(p) for p in pidfile.read_text().split()]
    job = await finished(client, job_id)
    assert job["state"] == "failed"
    assert job["error"]["type"] == "Timeout" and "timeout_s (1.0)" in job["error"]["message"]
    assert job["options"]["timeout_s"] == 1
    assert all(process_gone(pid) for pid in children)
    later = await submit_job(client, "add", 1, 2)  # capacity restored
    assert (await finished(client, later))["result"] == 3


async def test_a_hard_timeout_stops_a_job_that_ignores_sigterm(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    job_id = await submit_job(client, "ignore_sigterm", str(tmp_path / "started"), timeout_s=0.3)
    job = await finished(client, job_id)
    assert (job["state"], job["error"]["type"]) == ("failed", "Timeout")


async def test_the_task_default_applies_and_the_job_value_wins(client: httpx.AsyncClient) -> None:
    tasks = {t["name"]: t for t in (await client.get("/tasks")).json()["tasks"]}
    assert tasks[T + "limited"]["options"]["timeout_s"] == 0.5
    defaulted = await finished(client, await submit_job(client, "limited", 5))
    assert defaulted["error"]["type"] == "Timeout"
    overridden = await finished(client, await submit_job(client, "limited", 0.8, timeout_s=5))
    assert (overridden["state"], overridden["result"]) == ("succeeded", 0.8)
    assert overridden["options"]["timeout_s"] == 5


@pytest.mark.parametrize("task", ["soft_aware", "async_soft_aware"])
async def test_a_soft_timeout_is_raised_inside_the_task(
    client: httpx.AsyncClient, task: str
) -> None:
    job = await finished(client, await submit_job(client, task, 30, soft_timeout_s=0.3))
    assert (job["state"], job["result"]) == ("succeeded", "stopped early")


@pytest.mark.parametrize("task", ["sleep", "async_sleep"])
async def test_an_uncaught_soft_timeout_fails_the_job(client: httpx.AsyncClient, task: str) -> None:
    job = await finished(client, await submit_job(client, task, 30, soft_timeout_s=0.2))
    assert (job["state"], job["error"]["type"]) == ("failed", "SoftTimeout")
    assert "soft_timeout_s (0.2)" in job["error"]["message"]


@pytest.mark.parametrize("task", ["sleep", "async_sleep"])
async def test_a_job_within_its_soft_limit_is_untouched(
    client: httpx.AsyncClient, task: str
) -> None:
    job = await finished(client, await submit_job(client, task, 0.05, soft_timeout_s=5))
    assert (job["state"], job["result"]) == ("succeeded", 0.05)


async def test_a_job_that_ignores_its_soft_timeout_meets_the_hard_one(
    client: httpx.AsyncClient,
) -> None:
    job_id = await submit_job(client, "stubborn", 30, soft_timeout_s=0.2, timeout_s=0.6)
    job = await finished(client, job_id)
    assert (job["state"], job["error"]["type"]) == ("failed", "Timeout")


@pytest.mark.parametrize(
    ("options", "status", "error"),
    [
        ({"timeout_s": 0}, 400, "invalid_request"),
        ({"timeout_s": -1}, 400, "invalid_request"),
        ({"timeout_s": "5"}, 400, "invalid_request"),
        ({"soft_timeout_s": 2, "timeout_s": 1}, 422, "invalid_options"),
        ({"soft_timeout_s": 1}, 422, "invalid_options"),  # over the task's own 0.5 s limit
    ],
)
async def test_bad_timeouts_are_refused(
    client: httpx.AsyncClient, options: dict[str, Any], status: int, error: str
) -> None:
    response = await client.post("/jobs", json={"task": T + "limited", "args": [1], **options})
    assert response.status_code == status
    assert response.json()["error"] == error

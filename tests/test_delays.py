"""Delayed jobs: scheduled until due, never run before their time, durable across restarts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from service.schemas import parse_time

from .conftest import ServiceProcess, wait_state

T = "tests.sample_tasks."


async def submit(client: httpx.AsyncClient, **body: Any) -> Any:
    response = await client.post("/jobs", json={"task": T + "add", "args": [1, 2], **body})
    assert response.status_code == 202, response.text
    return response.json()


async def test_a_delayed_job_waits_for_its_time(client: httpx.AsyncClient) -> None:
    job = await submit(client, delay_s=0.6)
    assert job["state"] == "scheduled"
    due = parse_time(job["scheduled_at"])
    assert abs(due - parse_time(job["created_at"]) - 0.6) < 0.01
    listed = (await client.get("/jobs?state=scheduled")).json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]
    done = await wait_state(client, job["id"], "succeeded")
    assert parse_time(done["started_at"]) >= due
    assert done["result"] == 3


async def test_run_at_in_the_future_and_in_the_past(client: httpx.AsyncClient) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=2)  # still ahead when the submit lands
    later = await submit(client, run_at=soon.isoformat().replace("+00:00", "Z"))
    assert later["state"] == "scheduled"
    past = await submit(client, run_at="2020-01-01T00:00:00")
    assert past["state"] == "queued" and past["scheduled_at"] is None
    done = await wait_state(client, later["id"], "succeeded")
    assert parse_time(done["started_at"]) >= soon.timestamp()


async def test_a_canceled_scheduled_job_never_runs(client: httpx.AsyncClient) -> None:
    job = await submit(client, delay_s=0.3)
    response = await client.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 200 and response.json()["state"] == "canceled"
    marker = await submit(client, delay_s=0.6)  # due after the canceled one
    await wait_state(client, marker["id"], "succeeded")
    after = (await client.get(f"/jobs/{job['id']}")).json()
    assert (after["state"], after["attempt"], after["started_at"]) == ("canceled", 0, None)


@pytest.mark.parametrize(
    "body",
    [
        {"delay_s": 1, "run_at": "2030-01-01T00:00:00Z"},
        {"delay_s": -1},
        {"run_at": "tomorrow"},
        {"run_at": 1234},
        {"run_at": "9999-12-31T23:59:59-01:00"},
        {"delay_s": 1e12},
    ],
)
async def test_bad_delays_are_400(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    response = await client.post("/jobs", json={"task": T + "add", "args": [1, 2], **body})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_scheduled_jobs_survive_a_restart_and_still_wait(
    service_process: Callable[..., ServiceProcess],
) -> None:
    service = service_process()
    service.start()
    await service.wait_ready()
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
        job = await submit(client, delay_s=2.5)
        assert service.terminate() == 0
        service.start()
        await service.wait_ready()
        assert (await client.get(f"/jobs/{job['id']}")).json()["state"] == "scheduled"
        done = await wait_state(client, job["id"], "succeeded")
        assert parse_time(done["started_at"]) >= parse_time(job["scheduled_at"])

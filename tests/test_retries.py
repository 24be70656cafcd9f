"""Retries with back-off, their history, and retry on request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from service.jobs import retry_delay_s
from service.options import JobOptions
from service.schemas import parse_time

from .conftest import finished, submit_job, wait_until

T = "tests.sample_tasks."


async def test_a_flaky_job_is_retried_until_it_succeeds(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    job = await finished(
        client, await submit_job(client, "flaky_with_policy", str(tmp_path / "m"), 2)
    )
    assert (job["state"], job["result"], job["attempt"], job["retries"]) == ("succeeded", 3, 3, 2)
    outcomes = [(a["number"], a["outcome"]) for a in job["attempts"]]
    assert outcomes == [(1, "retried"), (2, "retried"), (3, "succeeded")]
    assert job["attempts"][0]["error"]["message"] == "run 1 fails"
    assert job["options"]["max_retries"] == 2


async def test_retries_run_out(client: httpx.AsyncClient, tmp_path: Path) -> None:
    job = await finished(
        client, await submit_job(client, "flaky_with_policy", str(tmp_path / "m"), 5)
    )
    assert (job["state"], job["attempt"], job["error"]["message"]) == ("failed", 3, "run 3 fails")
    assert [a["outcome"] for a in job["attempts"]] == ["retried", "retried", "failed"]


async def test_retry_on_limits_what_is_retried(client: httpx.AsyncClient, tmp_path: Path) -> None:
    job_id = await submit_job(
        client, "flaky_with_policy", str(tmp_path / "m"), 1, retry_on=["KeyError"]
    )
    job = await finished(client, job_id)
    assert (job["state"], job["attempt"], job["retries"]) == ("failed", 1, 0)


async def test_a_job_waiting_for_its_retry_is_scheduled(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    job_id = await submit_job(
        client, "flaky", str(tmp_path / "m"), 1, max_retries=1, retry_backoff_s=0.8
    )

    async def waiting() -> Any:
        job = (await client.get(f"/jobs/{job_id}")).json()
        return job if job["state"] == "scheduled" else None

    waiting_job = await wait_until(waiting, what="the retry's wait")
    assert waiting_job["error"]["type"] == "ValueError" and waiting_job["retries"] == 1
    due = parse_time(waiting_job["scheduled_at"])
    done = await finished(client, job_id)
    assert done["state"] == "succeeded" and parse_time(done["started_at"]) >= due


async def test_a_timeout_is_retried_by_policy(client: httpx.AsyncClient) -> None:
    job_id = await submit_job(
        client, "sleep", 30, timeout_s=0.3, max_retries=1, retry_backoff_s=0.05
    )
    job = await finished(client, job_id)
    assert (job["state"], job["error"]["type"], job["attempt"]) == ("failed", "Timeout", 2)


async def test_retry_on_request_runs_the_same_job_again(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    job_id = await submit_job(client, "flaky", str(tmp_path / "m"), 1)
    failed = await finished(client, job_id)
    assert failed["state"] == "failed"
    response = await client.post(f"/jobs/{job_id}/retry")
    assert response.status_code == 200 and response.json()["state"] == "queued"
    assert response.json()["error"] is None
    done = await finished(client, job_id)
    assert (done["state"], done["result"], done["attempt"]) == ("succeeded", 2, 2)
    assert [a["outcome"] for a in done["attempts"]] == ["failed", "succeeded"]
    again = await client.post(f"/jobs/{job_id}/retry")
    assert again.status_code == 409 and again.json()["state"] == "succeeded"
    assert (await client.post("/jobs/nope/retry")).status_code == 404


async def test_a_canceled_job_can_be_retried(client: httpx.AsyncClient) -> None:
    job_id = await submit_job(client, "add", 1, 2, delay_s=30)
    assert (await client.post(f"/jobs/{job_id}/cancel")).json()["state"] == "canceled"
    assert (await client.post(f"/jobs/{job_id}/retry")).status_code == 200
    assert (await finished(client, job_id))["result"] == 3


def test_back_off_doubles_with_jitter_up_to_its_cap() -> None:
    options = JobOptions(retry_backoff_s=1.0, retry_backoff_max_s=5.0)
    assert [retry_delay_s(options, n, lambda: 1.0) for n in (1, 2, 3, 4)] == [1, 2, 4, 5]
    assert [retry_delay_s(options, n, lambda: 0.0) for n in (1, 2, 3, 4)] == [0.5, 1, 2, 2.5]
    assert retry_delay_s(options, 10_000, lambda: 1.0) == 5.0  # no overflow

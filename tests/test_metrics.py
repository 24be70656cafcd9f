"""``GET /metrics``: Prometheus' text format, following the jobs as they run."""

from __future__ import annotations

import dataclasses

import httpx

from service.settings import Settings

from .conftest import TASKS, live_server, samples, submit_job, wait_state, wait_until

T = TASKS + "."


async def test_the_figures_follow_the_jobs(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await client.post("/jobs?wait_s=10", json={"task": T + "add", "args": [1, 2]})
    failed = await submit_job(client, "fail", "no")
    await client.get(f"/jobs/{failed}", params={"wait_s": 10})
    running = await submit_job(client, "sleep", 30)
    await wait_state(client, running, "running")
    async with client.stream("GET", "/events"):
        response = await client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        got = samples(response.text)
    add, fail = (("task", T + "add"),), (("task", T + "fail"),)
    assert got[("conveyor_jobs_finished_total", (("state", "succeeded"), *add))] == 3
    assert got[("conveyor_jobs_finished_total", (("state", "failed"), *fail))] == 1
    assert got[("conveyor_submits_total", add)] == 3
    assert got[("conveyor_job_duration_seconds_count", add)] == 3
    assert got[("conveyor_job_wait_seconds_count", add)] == 3
    assert got[("conveyor_jobs", (("queue", "default"), ("state", "succeeded")))] == 3
    assert got[("conveyor_jobs", (("queue", "default"), ("state", "running")))] == 1
    assert got[("conveyor_workers", (("state", "busy"),))] == 1
    assert got[("conveyor_sse_clients", ())] == 1
    await client.post(f"/jobs/{running}/cancel")  # its worker is killed, and replaced

    async def replaced() -> bool:
        text = (await client.get("/metrics")).text
        return samples(text).get(("conveyor_worker_restarts_total", (("reason", "killed"),))) == 1

    await wait_until(replaced, what="the killed worker to be counted")


async def test_metrics_need_the_token_when_one_is_set(settings: Settings) -> None:
    async with (
        live_server(dataclasses.replace(settings, token="s3cret")) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        assert (await client.get("/metrics")).status_code == 401
        headers = {"Authorization": "Bearer s3cret"}
        assert (await client.get("/metrics", headers=headers)).status_code == 200

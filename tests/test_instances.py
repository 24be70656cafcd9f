"""Several services on one PostgreSQL database, each run as a user runs it: a job submitted to
one runs on whichever has a free worker, its events reach every one, a cancel sent to one stops
it on another, a ``kill -9`` loses nothing acknowledged, and a cron tick makes one job."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime
from typing import Any

import httpx
import pytest
from playwright.async_api import expect

from .browsers import HAVE_CHROMIUM, chromium
from .conftest import (
    TASKS,
    ServiceProcess,
    finished,
    process_gone,
    submit_job,
    wait_state,
    wait_until,
)
from .postgres import needs_postgres

pytestmark = needs_postgres

Services = Callable[..., Awaitable[list[ServiceProcess]]]


@pytest.fixture
def services(service_process: Callable[..., ServiceProcess], postgres_database: str) -> Services:
    """``await services(n, **env)``: n services started on the one database, ready."""

    async def start(n: int, **env: str) -> list[ServiceProcess]:
        started = [service_process(CONVEYOR_DATABASE=postgres_database, **env) for _ in range(n)]
        for service in started:
            service.start()
        await asyncio.gather(*(service.wait_ready() for service in started))
        return started

    return start


@asynccontextmanager
async def clients(*services: ServiceProcess) -> AsyncIterator[list[httpx.AsyncClient]]:
    """An HTTP client of each service, in their order."""
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(httpx.AsyncClient(base_url=s.url, timeout=10))
            for s in services
        ]


async def _running_pid(client: httpx.AsyncClient, job_id: str) -> int:
    """The pid of the worker running ``job_id``, as its service's /health shows it."""
    for worker in (await client.get("/health")).json()["workers"]["workers"]:
        if worker["job_id"] == job_id:
            return int(worker["pid"])
    raise AssertionError(f"job {job_id} runs on no worker of {client.base_url}")


async def test_a_job_submitted_to_one_runs_on_another_with_a_free_worker(
    services: Services,
) -> None:
    a, b = await services(2, CONVEYOR_CONCURRENCY="1")
    async with clients(a, b) as (on_a, on_b):
        busy = await submit_job(on_a, "sleep", 30)
        await wait_state(on_a, busy, "running")
        # to the service whose one worker holds the sleep: the other's worker takes it
        runner = on_a if await _runs_here(on_a, busy) else on_b
        added = await submit_job(runner, "add", 2, 3)
        assert (await finished(on_a, added))["result"] == 5
        assert (await on_b.get(f"/jobs/{added}")).json()["state"] == "succeeded"
        assert await _runs_here(runner, busy)  # still busy with it all along
        # each service lists the workers of both, each marked with its service and where it runs
        # (the other's as it last showed them: within half a second of a change)
        workers = (await on_b.get("/workers")).json()
        assert workers["size"] == 2 and len({w["service"] for w in workers["workers"]}) == 2
        at = f"{socket.gethostname()}:{(a if runner is on_a else b).pid}"

        async def busy_where() -> bool:
            workers = (await on_b.get("/workers")).json()["workers"]
            return {w["service_at"] for w in workers if w["job"]} == {at}

        await wait_until(busy_where, what=f"/workers to show the sleep running at {at}")
        await on_a.post(f"/jobs/{busy}/cancel")


@pytest.mark.skipif(not HAVE_CHROMIUM, reason="needs Debian's chromium; CI installs it")
async def test_the_dashboard_of_one_shows_the_workers_of_every_service(
    services: Services,
) -> None:
    a, b = await services(2, CONVEYOR_CONCURRENCY="1")
    async with clients(a, b) as (on_a, _), chromium() as browser:
        busy = await submit_job(on_a, "sleep", 30)
        await wait_state(on_a, busy, "running")
        runner = a if await _runs_here(on_a, busy) else b
        page = await browser.new_page()
        await page.goto(b.url + "/#/")
        workers = page.locator("table.workers tbody tr")
        await expect(workers).to_have_count(2, timeout=10_000)
        # the busy worker is shown with its job and the service that runs it
        row = page.locator(f'table.workers tr[data-job-id="{busy}"]')
        await expect(row.locator('td[data-label="service"]')).to_have_text(
            f"{socket.gethostname()}:{runner.pid}", timeout=10_000
        )
        await expect(page.locator('table.workers td[data-label="service"]')).to_have_count(2)
        await on_a.post(f"/jobs/{busy}/cancel")


async def _runs_here(client: httpx.AsyncClient, job_id: str) -> bool:
    workers = (await client.get("/health")).json()["workers"]["workers"]
    return any(worker["job_id"] == job_id for worker in workers)


async def test_a_job_s_events_reach_the_streams_of_every_service(services: Services) -> None:
    a, b = await services(2)
    async with clients(a, b) as (on_a, on_b):
        job_id = await submit_job(on_a, "steps", 3, 0.2)  # a progress event each step
        seen: dict[str, list[str]] = {}

        async def follow(name: str, client: httpx.AsyncClient) -> None:
            kinds = seen.setdefault(name, [])
            async with client.stream("GET", f"/jobs/{job_id}/events") as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("data: "):
                        kinds.append(line)

        await asyncio.wait_for(asyncio.gather(follow("a", on_a), follow("b", on_b)), 20)
        # the same events, to the end, from whichever service ran the job
        assert seen["a"] == seen["b"] and len(seen["a"]) >= 3 + 3


async def test_a_cancel_sent_to_one_service_kills_the_job_on_another(services: Services) -> None:
    a, b = await services(2, CONVEYOR_CONCURRENCY="1")
    async with clients(a, b) as (on_a, on_b):
        job_id = await submit_job(on_a, "sleep", 30)
        await wait_state(on_a, job_id, "running")
        runner, other = (on_a, on_b) if await _runs_here(on_a, job_id) else (on_b, on_a)
        pid = await _running_pid(runner, job_id)
        started = time.monotonic()
        canceled = await other.post(f"/jobs/{job_id}/cancel")
        assert canceled.status_code == 200, canceled.text
        assert canceled.json()["state"] == "canceled"
        assert time.monotonic() - started < 5
        assert process_gone(pid)  # the worker that ran it was killed, on the other service


async def test_a_kill_9_under_load_loses_nothing_acknowledged(services: Services) -> None:
    a, b = await services(2, CONVEYOR_LEASE_S="1.5")
    async with clients(a, b) as (on_a, on_b):
        jobs: list[tuple[str, Any]] = []
        for n in range(40):
            client = on_a if n % 2 else on_b
            if n % 10 == 0:
                jobs.append((await submit_job(client, "sleep", 0.5), None))
            else:
                jobs.append((await submit_job(client, "add", n, n), 2 * n))
        a.kill()  # mid-run: its running jobs wait out its lease, then run on b
        for job_id, result in jobs:
            done = await finished(on_b, job_id)
            assert done["state"] == "succeeded", done
            assert result is None or done["result"] == result


async def test_three_services_make_one_job_per_cron_tick(services: Services) -> None:
    a, _, _ = await services(3, CONVEYOR_TASKS="tests.sample_tasks,tests.every_second_tasks")
    schedule = "task:tests.every_second_tasks.tick"  # declared in code: each service fires it
    async with httpx.AsyncClient(base_url=a.url, timeout=10) as on_a:

        async def ticks() -> list[Any] | None:
            page = (await on_a.get("/jobs", params={"schedule": schedule})).json()
            return page["jobs"] if len(page["jobs"]) >= 5 else None

        jobs = await wait_until(ticks, timeout_s=20, what="five ticks' jobs")
    created = sorted(datetime.fromisoformat(job["created_at"]).timestamp() for job in jobs)
    seconds = created[-1] - created[0]
    # one job a tick, the tick fired by each of three services: a job each second at most
    # (three, were each service to make its own)
    assert len(created) <= seconds + 2, created


async def test_a_schedule_made_on_one_service_is_known_to_the_others(services: Services) -> None:
    a, b = await services(2)
    async with clients(a, b) as (on_a, on_b):
        body = {"id": "nightly", "task": "tests.sample_tasks.add", "cron": "0 3 * * *",
                "args": [1, 1]}  # fmt: skip
        assert (await on_a.post("/schedules", json=body)).status_code == 201
        seen = await on_b.get("/schedules/nightly")
        assert seen.status_code == 200 and seen.json()["cron"] == "0 3 * * *"
        assert (await on_b.post("/schedules/nightly/pause")).json()["paused"] is True
        assert (await on_a.get("/schedules/nightly")).json()["paused"] is True
        assert (await on_b.delete("/schedules/nightly")).status_code == 204
        assert (await on_a.get("/schedules/nightly")).status_code == 404
        assert (await on_a.get("/schedules")).json()["schedules"] == []


async def test_each_service_counts_the_jobs_waiting_for_any_of_them(services: Services) -> None:
    a, b = await services(2, CONVEYOR_CONCURRENCY="1")
    async with clients(a, b) as (on_a, on_b):
        sleeps = [await submit_job(on_a, "sleep", 30) for _ in range(3)]

        async def one_waits() -> bool:  # each service's one worker holds a sleep
            stats = (await on_b.get("/stats")).json()["by_state"]
            return bool(stats["running"] == 2 and stats["queued"] == 1)

        await wait_until(one_waits, what="two sleeps running and one queued")
        for client in (on_a, on_b):

            async def counted(client: httpx.AsyncClient = client) -> Any:
                # each service hears of the others' events a moment after they commit
                jobs = (await client.get("/health")).json()["jobs"]
                return jobs if (jobs["queued"], jobs["running"]) == (1, 1) else None

            jobs = await wait_until(counted, what=f"{client.base_url} to count them")
            assert jobs["queued_by_queue"] == {"default": 1}
        for job_id in sleeps:
            assert (await on_b.post(f"/jobs/{job_id}/cancel")).status_code == 200


async def test_a_rate_limit_holds_across_services(services: Services) -> None:
    a, b = await services(2)
    async with clients(a, b) as (on_a, on_b):
        calls = [{"task": f"{TASKS}.rated", "args": [str(n)]} for n in range(6)]
        made = (await on_a.post("/jobs/batch", json={"jobs": calls})).json()["jobs"]
        done = [await finished(on_b, job["id"]) for job in made]
    assert {job["state"] for job in done} == {"succeeded"}
    starts = sorted(datetime.fromisoformat(job["started_at"]).timestamp() for job in done)
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    # four workers on two services, one start each 0.1 s all the same (never two together)
    assert starts[-1] - starts[0] >= 5 * 0.1 - 0.005 and min(gaps) >= 0.05

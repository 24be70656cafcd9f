"""Task and queue rate limits on a real server: jobs beyond the rate wait ``queued`` and start
evenly spaced, in priority order, the task's own limit or a job's or a queue's, and the spacing
holds across a restart."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from datetime import datetime

import httpx
import pytest

from service.errors import SettingsError
from service.rates import interval_s
from service.settings import Settings

from .conftest import TASKS, ServiceProcess, finished, live_server, submit_job

T = TASKS + "."


async def started_at(client: httpx.AsyncClient, job_ids: list[str]) -> list[float]:
    """When each job started, as the service recorded it (epoch seconds)."""
    done = [await finished(client, job_id) for job_id in job_ids]
    assert {job["state"] for job in done} == {"succeeded"}
    return [datetime.fromisoformat(job["started_at"]).timestamp() for job in done]


def spaced(times: list[float], interval_s: float) -> bool:
    """Whether starts came one an interval, never two together: on average an interval apart
    (the limit's own times are exact; a start is recorded a few ms after it is let go)."""
    ordered = sorted(times)
    gaps = [b - a for a, b in itertools.pairwise(ordered)]
    span_ok = ordered[-1] - ordered[0] >= (len(ordered) - 1) * interval_s - 0.005
    return span_ok and min(gaps) >= interval_s / 2


async def test_a_task_s_jobs_start_evenly_spaced_at_its_rate_in_priority_order(
    client: httpx.AsyncClient,
) -> None:
    tasks = {t["name"]: t for t in (await client.get("/tasks")).json()["tasks"]}
    assert tasks[T + "rated"]["options"]["rate_limit"] == "10/s"
    calls: list[dict[str, object]] = [{"task": T + "rated", "args": [str(n)]} for n in range(5)]
    calls.append({"task": T + "rated", "args": ["urgent"], "priority": 9})
    made = (await client.post("/jobs/batch", json={"jobs": calls})).json()["jobs"]
    ids = [job["id"] for job in made]
    held = {t["name"]: t["held_by_rate"] for t in (await client.get("/tasks")).json()["tasks"]}
    assert held[T + "rated"] >= 4  # all but the one it lets go: queued, not failed
    times = await started_at(client, ids)
    assert spaced(times, 0.1)  # one each 0.1 s, never two together
    # the urgent one was submitted last, in the same batch, and started first
    assert sorted(times).index(times[-1]) == 0


async def test_a_job_may_set_its_own_rate_and_a_queue_has_one_for_all(settings: Settings) -> None:
    limited = dataclasses.replace(settings, queue_rates={"slow": "5/s"})
    async with live_server(limited) as url, httpx.AsyncClient(base_url=url) as client:
        own = [await submit_job(client, "rated", str(n), rate_limit="4/s") for n in range(3)]
        assert spaced(await started_at(client, own), 0.25)
        queued = [await submit_job(client, "rated", str(n), queue="slow") for n in range(3)]
        assert spaced(await started_at(client, queued), 0.2)
        refused = await client.post("/jobs", json={"task": T + "add", "rate_limit": "fast"})
        assert refused.status_code == 400 and "rate_limit" in refused.text


async def test_the_spacing_holds_across_a_restart(
    service_process: Callable[..., ServiceProcess],
) -> None:
    service = service_process()
    service.start()
    await service.wait_ready()
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
        first = await submit_job(client, "add", 1, 1, rate_limit="1/h")
        assert (await finished(client, first))["result"] == 2
        second = await submit_job(client, "add", 2, 2, rate_limit="1/h")
        service.kill()
        service.start()
        await service.wait_ready()
        held = {t["name"]: t["held_by_rate"] for t in (await client.get("/tasks")).json()["tasks"]}
        assert held[T + "add"] == 1  # the next start is an hour after the first, still
        assert (await client.get(f"/jobs/{second}")).json()["state"] == "queued"
        assert (await client.post(f"/jobs/{second}/cancel")).json()["state"] == "canceled"


def test_rates_are_read_as_celery_writes_them() -> None:
    assert [interval_s(r) for r in ("60/m", "10/s", "2/h", "1/d")] == [1.0, 0.1, 1800.0, 86400.0]
    for wrong in ("0/s", "1/w", "1.5/s", "/s", "10"):
        with pytest.raises(ValueError, match="per second"):
            interval_s(wrong)
    settings = Settings.from_env({"CONVEYOR_QUEUES": "default=4,reports=1@10/m,mail=@100/m"})
    assert settings.queues == {"default": 4, "reports": 1}
    assert settings.queue_rates == {"reports": "10/m", "mail": "100/m"}
    with pytest.raises(SettingsError, match="CONVEYOR_QUEUES"):
        Settings.from_env({"CONVEYOR_QUEUES": "mail=@100/w"})

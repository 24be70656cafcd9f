"""Jobs that wait for other jobs (``depends_on``), through the API of a real server: waiting
until every one has succeeded, canceled when one fails (or run anyway), refused when one does
not exist, and let go by the commit that finishes the last of them, also after a restart."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import TASKS, ServiceProcess, SharedService, finished, submit_job, wait_state


@pytest.fixture
async def client(shared_service: SharedService) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the module's one service: its tests need no service of their own."""
    async with httpx.AsyncClient(base_url=shared_service.url, timeout=10) as made:
        yield made


async def test_a_job_waits_until_its_dependencies_succeed_then_runs(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    first = await submit_job(client, "gate", str(go), "first")
    second = await submit_job(client, "add", 1, 2)
    after = await submit_job(client, "echo", "after", depends_on=[first, second])
    job = (await client.get(f"/jobs/{after}")).json()
    assert job["state"] == "waiting" and job["depends_on"] == [first, second]
    assert (await finished(client, second))["state"] == "succeeded"
    assert (await client.get(f"/jobs/{after}")).json()["state"] == "waiting"  # first runs on
    go.touch()
    done = await finished(client, after)
    assert done["state"] == "succeeded" and done["result"] == {"args": ["after"], "kwargs": {}}
    # its events: created waiting, let go (queued) once first had succeeded, then run
    events = await _states(client, after)
    assert events[:2] == [(None, "waiting"), ("waiting", "queued")]
    first_done = (await client.get(f"/jobs/{first}")).json()["finished_at"]
    assert done["started_at"] >= first_done  # ISO-8601 in UTC: ordered as text


async def _states(client: httpx.AsyncClient, job_id: str) -> list[tuple[Any, Any]]:
    async with client.stream("GET", f"/jobs/{job_id}/events") as response:
        states = []
        async for line in response.aiter_lines():
            if line.startswith("data:") and '"state"' in line and '"from"' in line:
                data = json.loads(line[5:])
                states.append((data["from"], data["state"]))
                if data["state"] in ("succeeded", "failed", "canceled"):
                    break
        return states


async def test_a_failed_dependency_cancels_the_waiting_job_naming_it(
    client: httpx.AsyncClient,
) -> None:
    failing = await submit_job(client, "fail", "no")
    blocked = await submit_job(client, "add", 1, 1, depends_on=[failing])
    anyway = await submit_job(
        client, "add", 2, 2, depends_on=[failing], on_dependency_failure="run"
    )
    behind = await submit_job(client, "add", 3, 3, depends_on=[blocked])
    canceled = await finished(client, blocked)
    assert canceled["state"] == "canceled"
    assert canceled["error"]["type"] == "dependency_failed"
    assert failing in canceled["error"]["message"]
    assert (await finished(client, behind))["state"] == "canceled"  # and what waits on it
    assert (await finished(client, anyway))["result"] == 4


async def test_unknown_dependencies_are_refused_naming_them(client: httpx.AsyncClient) -> None:
    known = await submit_job(client, "add", 1, 1)
    marker = uuid.uuid4().hex  # in the refused jobs' arguments: none of them is stored
    body = {"task": f"{TASKS}.echo", "args": [marker], "depends_on": [known, "nope"]}
    refused = await client.post("/jobs", json=body)
    assert refused.status_code == 422
    assert refused.json()["error"] == "unknown_dependencies"
    assert refused.json()["unknown"] == ["nope"] and "nope" in refused.json()["detail"]
    batch = {"jobs": [{"task": f"{TASKS}.echo", "args": [marker]}, body]}
    refused = await client.post("/jobs/batch", json=batch)
    assert refused.status_code == 422 and refused.json()["index"] == 1
    assert (await client.get("/jobs", params={"q": marker})).json()["jobs"] == []
    for wrong in ({"depends_on": "x"}, {"depends_on": [""]}, {"on_dependency_failure": "skip"}):
        answer = await client.post("/jobs", json={"task": f"{TASKS}.add", **wrong})
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_request"


async def test_canceling_a_waiting_job_cancels_what_waits_on_it(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    first = await submit_job(client, "gate", str(go))
    waiting = await submit_job(client, "add", 1, 1, depends_on=[first])
    behind = await submit_job(client, "add", 2, 2, depends_on=[waiting])
    answer = await client.post(f"/jobs/{waiting}/cancel")
    assert answer.status_code == 200 and answer.json()["state"] == "canceled"
    assert (await finished(client, behind))["error"]["type"] == "dependency_failed"
    go.touch()
    assert (await finished(client, first))["state"] == "succeeded"
    assert (await client.get(f"/jobs/{behind}")).json()["state"] == "canceled"  # for good


async def test_a_waiting_job_is_let_go_after_a_restart(
    service_process: Callable[..., ServiceProcess],
) -> None:
    service = service_process()
    service.start()
    await service.wait_ready()
    go = service.workdir / "go"
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
        first = await submit_job(client, "gate", str(go))
        await wait_state(client, first, "running")
        after = await submit_job(client, "add", 5, 5, depends_on=[first])
        service.kill()
        service.start()
        await service.wait_ready()
        assert (await client.get(f"/jobs/{after}")).json()["state"] == "waiting"
        go.touch()  # first runs again (interrupted), succeeds, and lets after go
        assert (await finished(client, after))["result"] == 10


async def test_a_job_canceled_while_waiting_and_run_again_waits_again(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    first = await submit_job(client, "gate", str(go))
    waiting = await submit_job(client, "add", 1, 1, depends_on=[first])
    assert (await client.post(f"/jobs/{waiting}/cancel")).json()["state"] == "canceled"
    again = await client.post(f"/jobs/{waiting}/retry")
    assert again.status_code == 200 and again.json()["state"] == "waiting"
    go.touch()
    assert (await finished(client, waiting))["result"] == 2

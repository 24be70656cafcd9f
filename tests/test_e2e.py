"""End to end, as a user runs it: a real server on a free port, HTTP and SSE clients.

Restarts and crashes use the real command (``hypercorn --config hypercorn.toml ...``) in a
subprocess that is stopped with SIGTERM or killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from httpx_sse import aconnect_sse, connect_sse

from service.settings import Settings

from .conftest import (
    ROOT,
    ServiceProcess,
    SharedService,
    live_server,
    process_gone,
    wait_state,
    wait_until,
)

T = "tests.sample_tasks."
Factory = Callable[..., ServiceProcess]


@dataclasses.dataclass
class Received:
    id: int
    event: str
    data: dict[str, Any]


class EventReader:
    """Reads an SSE stream in the background into ``events``."""

    def __init__(self) -> None:
        self.events: list[Received] = []

    def of(self, job_id: str) -> list[Received]:
        return [e for e in self.events if e.data.get("job_id") == job_id]

    def states(self, job_id: str) -> list[str]:
        return [e.data["state"] for e in self.of(job_id) if e.event == "state"]


@asynccontextmanager
async def reading(
    client: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None
) -> AsyncIterator[EventReader]:
    reader = EventReader()
    connected = asyncio.Event()

    async def read() -> None:
        async with aconnect_sse(
            client, "GET", path, headers=dict(headers or {}), timeout=None
        ) as source:
            assert source.response.status_code == 200
            assert source.response.headers["content-type"].startswith("text/event-stream")
            connected.set()
            async for sse in source.aiter_sse():
                if sse.data:  # "retry:"-only blocks come through as empty events
                    reader.events.append(Received(int(sse.id), sse.event, orjson.loads(sse.data)))

    task = asyncio.create_task(read())
    await wait_until(lambda: connected.is_set() or task.done(), what="the stream to open")
    if task.done():
        task.result()
    try:
        yield reader
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def submit(client: httpx.AsyncClient, task: str, *args: Any) -> str:
    response = await client.post("/jobs", json={"task": task, "args": list(args)})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


async def test_watch_a_job_live(client: httpx.AsyncClient) -> None:
    async with reading(client, "/events") as stream:
        job_id = await submit(client, T + "steps", 5, 0.06)
        await wait_until(lambda: "succeeded" in stream.states(job_id), what="the terminal event")
    events = stream.of(job_id)
    assert stream.states(job_id) == ["queued", "running", "succeeded"]
    ids = [e.id for e in stream.events]
    assert ids == sorted(set(ids))  # strictly increasing
    progress = [e.data["progress"] for e in events if e.event == "progress"]
    assert progress and progress[-1] == {"done": 5, "total": 5, "message": "step 5"}
    assert [p["done"] for p in progress] == sorted(p["done"] for p in progress)
    assert all(e.data["at"].endswith("Z") for e in events)


async def test_job_stream_replays_the_past_then_ends(client: httpx.AsyncClient) -> None:
    job_id = await submit(client, T + "add", 1, 2)
    await wait_state(client, job_id, "succeeded")
    async with aconnect_sse(client, "GET", f"/jobs/{job_id}/events") as source:
        received = [orjson.loads(e.data) async for e in source.aiter_sse() if e.data]
        last_id = source.response  # the stream ended by itself after the terminal event
    assert [e["state"] for e in received] == ["queued", "running", "succeeded"]
    assert last_id.is_closed
    done = await client.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": "999999"})
    assert done.status_code == 204  # nothing more will come: EventSource stops reconnecting


async def test_job_stream_follows_a_running_job_to_its_end(client: httpx.AsyncClient) -> None:
    job_id = await submit(client, T + "steps", 3, 0.1)
    async with aconnect_sse(client, "GET", f"/jobs/{job_id}/events") as source:
        kinds = [(e.event, orjson.loads(e.data)) async for e in source.aiter_sse() if e.data]
    assert kinds[-1][0] == "state" and kinds[-1][1]["state"] == "succeeded"
    assert any(kind == "progress" for kind, _ in kinds)


async def test_resume_with_last_event_id_gets_exactly_what_was_missed(
    client: httpx.AsyncClient,
) -> None:
    async with reading(client, "/events") as first:
        jobs = [await submit(client, T + "add", i, i) for i in range(3)]
        await wait_until(lambda: all("succeeded" in first.states(j) for j in jobs), what="all done")
    everything = [e.id for e in first.events]
    cut = everything[3]
    for how in ("header", "query"):
        headers = {"Last-Event-ID": str(cut)} if how == "header" else None
        path = "/events" if how == "header" else f"/events?last_event_id={cut}"
        async with reading(client, path, headers) as resumed:
            await wait_until(functools.partial(caught_up, resumed, everything[-1]), what="catch-up")
        assert [e.id for e in resumed.events] == everything[4:]


def caught_up(reader: EventReader, last_id: int) -> bool:
    return bool(reader.events) and reader.events[-1].id >= last_id


def run_count_is(marker: Path, runs: int) -> bool:
    return marker.exists() and len(marker.read_text().split()) == runs


async def test_without_last_event_id_the_stream_starts_now(client: httpx.AsyncClient) -> None:
    old = await submit(client, T + "add", 1, 1)
    await wait_state(client, old, "succeeded")
    async with reading(client, "/events") as stream:
        new = await submit(client, T + "add", 2, 2)
        await wait_until(lambda: "succeeded" in stream.states(new), what="the new job")
    assert {e.data["job_id"] for e in stream.events} == {new}


async def test_an_event_id_the_store_never_gave_means_from_now(client: httpx.AsyncClient) -> None:
    async with reading(client, "/events", {"Last-Event-ID": "987654321"}) as stream:
        job_id = await submit(client, T + "add", 1, 1)
        await wait_until(lambda: "succeeded" in stream.states(job_id), what="the new job")
    assert stream.states(job_id) == ["queued", "running", "succeeded"]


async def test_bad_last_event_id_is_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/events", headers={"Last-Event-ID": "soon"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_idle_streams_get_keepalive_comments(settings: Settings) -> None:
    async with (
        live_server(dataclasses.replace(settings, sse_keepalive_s=0.1)) as url,
        httpx.AsyncClient(base_url=url) as client,
        client.stream("GET", "/events") as response,
    ):
        lines = response.aiter_lines()
        while await anext(lines) != ": keep-alive":
            pass


async def test_cancel_stops_the_whole_process_tree(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pids"
    job_id = await submit(client, T + "spawn_tree", str(pidfile))
    await wait_until(Path(str(pidfile) + ".ready").exists, what="the job's children")
    health = (await client.get("/health")).json()
    worker_pid = next(w["pid"] for w in health["workers"]["workers"] if w["job_id"] == job_id)
    pids = [worker_pid, *map(int, pidfile.read_text().split())]
    response = await client.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 200
    assert response.json()["state"] == "canceled"
    assert [process_gone(p) for p in pids] == [True, True, True]
    # capacity is restored: two jobs run side by side again
    sleepers = [await submit(client, T + "sleep", 30) for _ in range(2)]
    for sleeper in sleepers:
        await wait_state(client, sleeper, "running")
        assert (await client.post(f"/jobs/{sleeper}/cancel")).json()["state"] == "canceled"


async def test_cancel_kills_processes_that_left_the_group_too(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """A grandchild in a session of its own, orphaned: the worker (a subreaper) keeps it, and
    the cancel finds it under the worker and kills it with the rest."""
    pidfile = tmp_path / "pids"
    job_id = await submit(client, T + "escape_group", str(pidfile))
    await wait_until(Path(str(pidfile) + ".ready").exists, what="the job's escaped grandchild")
    child, grandchild = map(int, pidfile.read_text().split())
    assert process_gone(child) and not process_gone(grandchild)
    assert os.getpgid(grandchild) == grandchild  # a group of its own: killpg cannot reach it
    response = await client.post(f"/jobs/{job_id}/cancel")
    assert response.json()["state"] == "canceled"
    await wait_until(lambda: process_gone(grandchild), what="the escaped grandchild to die")


@pytest.mark.parametrize("task", ["ignore_sigterm", "raise_on_sigterm"])
async def test_cancel_wins_whatever_the_job_does_on_sigterm(
    client: httpx.AsyncClient, tmp_path: Path, task: str
) -> None:
    started = tmp_path / "started"
    job_id = await submit(client, T + task, str(started))
    await wait_until(started.exists, what="the job to start")
    response = await client.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 200
    assert response.json()["state"] == "canceled"
    assert response.json()["error"] is None


async def test_two_cancels_of_one_running_job_agree(client: httpx.AsyncClient) -> None:
    job_id = await submit(client, T + "sleep", 30)
    await wait_state(client, job_id, "running")
    first, second = await asyncio.gather(
        client.post(f"/jobs/{job_id}/cancel"), client.post(f"/jobs/{job_id}/cancel")
    )
    assert {first.status_code, second.status_code} <= {200, 409}
    assert (await client.get(f"/jobs/{job_id}")).json()["state"] == "canceled"


# -- the real command in a subprocess --------------------------------------------------------


async def test_restart_after_kill_9_requeues_running_jobs_and_keeps_queued_ones(
    service_process: Factory, tmp_path: Path
) -> None:
    service = service_process(CONVEYOR_CONCURRENCY="1")
    service.start()
    await service.wait_ready()
    marker = tmp_path / "runs"
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
        running = await submit(client, T + "sleep", 0.5, str(marker))
        await wait_until(marker.exists, what="the first run")
        queued = await submit(client, T + "add", 40, 2)
        first_pid = int(marker.read_text().split()[0])
        service.kill()
        await wait_until(lambda: process_gone(first_pid), timeout_s=5, what="the orphaned worker")
        service.start()
        await service.wait_ready()
        again = await wait_state(client, running, "succeeded")
        assert again["attempt"] == 2
        assert again["retries"] == 0  # an interruption spends no retry
        assert [a["outcome"] for a in again["attempts"]] == ["interrupted", "succeeded"]
        assert (await wait_state(client, queued, "succeeded"))["result"] == 42
        assert len(marker.read_text().split()) == 2  # ran twice, never at the same time
        listed = (await client.get("/jobs")).json()["jobs"]
        assert sorted(j["id"] for j in listed) == sorted([running, queued])


async def test_sigterm_stops_cleanly_and_the_job_runs_again_after_restart(
    service_process: Factory, tmp_path: Path
) -> None:
    service = service_process(CONVEYOR_CONCURRENCY="1")
    service.start()
    await service.wait_ready()
    marker = tmp_path / "runs"
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
        job_id = await submit(client, T + "sleep", 30, str(marker))
        await wait_until(marker.exists, what="the job to start")
        assert service.terminate() == 0
        assert process_gone(int(marker.read_text().split()[0]))
        service.env["CONVEYOR_TASKS"] = T.rstrip(".")
        service.start()
        await service.wait_ready()
        again = await wait_state(client, job_id, "running")
        assert again["attempt"] == 2
        assert (await client.post(f"/jobs/{job_id}/cancel")).json()["state"] == "canceled"


async def test_a_clean_stop_does_not_count_as_an_interruption(
    service_process: Factory, tmp_path: Path
) -> None:
    service = service_process(CONVEYOR_MAX_INTERRUPTIONS="0", CONVEYOR_CONCURRENCY="1")
    marker = tmp_path / "runs"
    service.start()
    await service.wait_ready()
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
        job_id = await submit(client, T + "sleep", 30, str(marker))
        await wait_until(marker.exists, what="the job to start")
        assert service.terminate() == 0
        service.start()
        await service.wait_ready()
        again = await wait_state(client, job_id, "running")
        assert again["attempt"] == 2 and again["error"] is None


async def test_a_second_service_on_the_same_database_is_refused(
    service_process: Factory, tmp_path: Path
) -> None:
    first = service_process()
    first.start()
    await first.wait_ready()
    second = subprocess.run(
        [sys.executable, "-m", "hypercorn", "--config", str(ROOT / "hypercorn.toml"),
         "--bind", "127.0.0.1:0", "service.app:create_app()"],
        cwd=tmp_path, env={**first.env}, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert second.returncode != 0
    assert "another Conveyor service is using it" in second.stderr
    assert "CONVEYOR_DATABASE" in second.stderr and "Traceback" not in second.stderr
    async with httpx.AsyncClient(base_url=first.url, timeout=10) as client:  # unharmed
        job_id = await submit(client, T + "add", 1, 2)
        assert (await wait_state(client, job_id, "succeeded"))["result"] == 3


async def test_events_resume_across_a_restart(service_process: Factory) -> None:
    service = service_process()
    service.start()
    await service.wait_ready()
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
        async with reading(client, "/events") as before:
            first = await submit(client, T + "add", 1, 1)
            await wait_until(lambda: "succeeded" in before.states(first), what="the first job")
        seen = before.events[-1].id
        second = await submit(client, T + "add", 2, 2)  # its events happen while nobody listens
        await wait_state(client, second, "succeeded")
        assert service.terminate() == 0
        service.start()
        await service.wait_ready()
        third = await submit(client, T + "add", 3, 3)
        await wait_state(client, third, "succeeded")
        async with reading(client, "/events", {"Last-Event-ID": str(seen)}) as after:
            await wait_until(lambda: "succeeded" in after.states(third), what="catch-up")
    assert after.states(second) == ["queued", "running", "succeeded"]
    assert after.states(third) == ["queued", "running", "succeeded"]
    assert first not in {e.data["job_id"] for e in after.events}
    ids = [e.id for e in after.events]
    assert ids == sorted(set(ids)) and ids[0] == seen + 1


async def test_a_job_that_keeps_killing_the_service_fails_as_interrupted(
    service_process: Factory, tmp_path: Path
) -> None:
    service = service_process(CONVEYOR_MAX_INTERRUPTIONS="1", CONVEYOR_CONCURRENCY="1")
    marker = tmp_path / "runs"
    service.start()
    await service.wait_ready()
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
        job_id = await submit(client, T + "sleep", 30, str(marker))
        for runs in (1, 2):
            await wait_until(functools.partial(run_count_is, marker, runs), what=f"run {runs}")
            service.kill()
            service.start()
            await service.wait_ready()
        failed = await wait_state(client, job_id, "failed")
        assert failed["error"]["type"] == "Interrupted"
        assert failed["attempt"] == 2


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CONVEYOR_CONCURRENCY": "many"}, "CONVEYOR_CONCURRENCY"),
        ({"CONVEYOR_CANCEL_GRACE_S": "-1"}, "CONVEYOR_CANCEL_GRACE_S"),
        ({"CONVEYOR_COLOUR": "blue"}, "CONVEYOR_COLOUR"),
        ({"CONVEYOR_TIMEZONE": "Mars/Olympus"}, "CONVEYOR_TIMEZONE"),
        ({"CONVEYOR_TASKS": "no_such_module_here"}, "no_such_module_here"),
        ({"CONVEYOR_DATABASE": "/no/such/dir/jobs.db"}, "CONVEYOR_DATABASE"),
    ],
)
def test_a_bad_setting_stops_start_up_naming_it(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hypercorn", "--config", str(ROOT / "hypercorn.toml"),
         "--bind", "127.0.0.1:0", "service.app:create_app()"],
        cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", **env},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode != 0
    assert named in result.stderr
    assert "Traceback" not in result.stderr


async def test_task_modules_in_the_current_directory_are_importable(
    service_process: Factory, tmp_path: Path
) -> None:
    (tmp_path / "mytasks.py").write_text(
        "from service import task\n\n@task\ndef shout(text: str) -> str:\n    return text.upper()\n"
    )
    service = service_process(CONVEYOR_TASKS="mytasks")
    service.start()
    await service.wait_ready()
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
        job_id = await submit(client, "mytasks.shout", "hi")
        assert (await wait_state(client, job_id, "succeeded"))["result"] == "HI"


def test_a_job_read_right_after_its_streamed_end_has_ended(shared_service: SharedService) -> None:
    # SQLite shows a commit to readers a moment before the writer has updated its cache of
    # running jobs; a read in that moment must not answer with the job as it was. The service
    # runs in a process of its own, as in production: in this test's loop the moment never comes
    with httpx.Client(base_url=shared_service.url, timeout=10) as client:
        for _ in range(500):
            response = client.post("/jobs", json={"task": T + "add", "args": [1, 2]})
            job_id = response.json()["id"]
            with connect_sse(client, "GET", f"/jobs/{job_id}/events") as source:
                states = [sse.event for sse in source.iter_sse() if sse.event == "state"]
            job = client.get(f"/jobs/{job_id}").json()
            assert (len(states), job["state"]) == (3, "succeeded")

"""The store failing under a running service: another process holding the database, the disk
full (a file size limit), the file deleted or made read-only. Submits get a 503 with a JSON
detail, /ready says why, nothing acknowledged is lost, and the service recovers by itself once
the cause is gone."""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
from collections.abc import Callable

import httpx

from .conftest import TASKS, ServiceProcess, wait_until

ADD = {"task": f"{TASKS}.add", "args": [1, 2]}


async def started(service_process: Callable[..., ServiceProcess]) -> ServiceProcess:
    service = service_process()
    service.start()
    await service.wait_ready()
    return service


async def refused_then_recovered(client: httpx.AsyncClient, why: str) -> None:
    """While the cause lasts: a submit is 503 store_unavailable, /ready is 503 naming it."""
    refused = await client.post("/jobs", json=ADD)
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"] == "store_unavailable" and why in refused.json()["detail"]
    assert refused.headers["Retry-After"] == "1"
    ready = await client.get("/ready")
    assert ready.status_code == 503 and ready.json()["ready"] is False
    assert any(p.startswith("store:") and why in p for p in ready.json()["problems"])
    assert (await client.get("/health")).status_code in (200, 503)  # liveness: it answers


async def test_a_database_held_by_another_process(
    service_process: Callable[..., ServiceProcess],
) -> None:
    service = await started(service_process)
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
        kept = (await client.post("/jobs?wait_s=10", json=ADD)).json()
        holder = subprocess.Popen(
            [sys.executable, "-c", (
                "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
                "c.execute('BEGIN IMMEDIATE'); print('held', flush=True); sys.stdin.read()"
            ), str(service.workdir / "conveyor.db")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "held\n"
            await refused_then_recovered(client, "locked")
        finally:
            holder.communicate("")  # it lets go
        made = await client.post("/jobs?wait_s=10", json=ADD)
        assert made.status_code == 202 and made.json()["state"] == "succeeded"
        assert (await client.get("/ready")).json() == {"ready": True, "problems": []}
        assert (await client.get(f"/jobs/{kept['id']}")).json()["state"] == "succeeded"


async def test_a_full_disk(service_process: Callable[..., ServiceProcess]) -> None:
    service = await started(service_process)
    assert service.proc is not None
    pid = service.pid
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
        kept = (await client.post("/jobs?wait_s=10", json=ADD)).json()
        before = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, before[1]))  # no file may grow
        try:
            await refused_then_recovered(client, "disk")  # SQLite: "disk I/O error"
        finally:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, before)  # space again
        made = await client.post("/jobs?wait_s=10", json=ADD)
        assert made.status_code == 202 and made.json()["state"] == "succeeded"
        assert (await client.get(f"/jobs/{kept['id']}")).json()["state"] == "succeeded"
        assert (await client.get("/ready")).status_code == 200


async def test_a_deleted_database_file_takes_nothing_more(
    service_process: Callable[..., ServiceProcess],
) -> None:
    service = await started(service_process)
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
        await client.post("/jobs?wait_s=10", json=ADD)
        await asyncio.to_thread(os.unlink, service.workdir / "conveyor.db")
        # what it took now would be written to the deleted file, and gone at the next start
        await refused_then_recovered(client, "deleted")

        async def still_refused() -> bool:
            return (await client.post("/jobs", json=ADD)).status_code == 503

        await wait_until(still_refused, what="submits refused")


async def test_a_database_file_made_read_only_takes_nothing_until_writable_again(
    service_process: Callable[..., ServiceProcess],
) -> None:
    service = await started(service_process)
    path = service.workdir / "conveyor.db"
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
        kept = (await client.post("/jobs?wait_s=10", json=ADD)).json()
        await asyncio.to_thread(path.chmod, 0o400)
        try:
            # SQLite would write on through the descriptor it holds; the next start could not
            await refused_then_recovered(client, "read-only")
        finally:
            await asyncio.to_thread(path.chmod, 0o600)
        made = await client.post("/jobs?wait_s=10", json=ADD)
        assert made.status_code == 202 and made.json()["state"] == "succeeded"
        assert (await client.get(f"/jobs/{kept['id']}")).json()["state"] == "succeeded"
        assert (await client.get("/ready")).json() == {"ready": True, "problems": []}


async def test_no_stored_value_makes_a_read_fail(
    service_process: Callable[..., ServiceProcess],
) -> None:
    """A time past what ISO-8601 shows, stored before its option had a bound: every read and
    the cancel still answer, also after a restart."""
    service = await started(service_process)
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
        job = (await client.post("/jobs", json={**ADD, "delay_s": 3600})).json()
    assert service.terminate() == 0
    path = service.workdir / "conveyor.db"
    await asyncio.to_thread(_set_scheduled_at, path, job["id"], 1e15)  # the year 31,000-odd
    service.start()
    await service.wait_ready()
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
        listed = await client.get("/jobs")
        assert listed.status_code == 200
        assert listed.json()["jobs"][0]["scheduled_at"].startswith("9999-12-31")
        assert (await client.get(f"/jobs/{job['id']}")).status_code == 200
        canceled = await client.post(f"/jobs/{job['id']}/cancel")
        assert canceled.status_code == 200 and canceled.json()["state"] == "canceled"


def _set_scheduled_at(path: object, job_id: str, at: float) -> None:
    import sqlite3

    with sqlite3.connect(str(path)) as db:
        db.execute("UPDATE jobs SET scheduled_at = ? WHERE id = ?", (at, job_id))

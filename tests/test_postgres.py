"""The service on PostgreSQL (``CONVEYOR_DATABASE=postgresql://...``), run as a user runs it: jobs
run and stream, a running job is canceled, and a ``kill -9`` loses nothing acknowledged."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from .conftest import ROOT, ServiceProcess, finished, submit_job, wait_state, wait_until
from .postgres import needs_postgres

pytestmark = needs_postgres


async def test_a_service_on_postgres_runs_streams_and_cancels(
    service_process: Callable[..., ServiceProcess], postgres_database: str
) -> None:
    service = service_process(CONVEYOR_DATABASE=postgres_database)
    service.start()
    await service.wait_ready()
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
        added = await submit_job(client, "add", 2, 3)
        assert (await finished(client, added))["result"] == 5
        kinds = []
        async with client.stream("GET", f"/jobs/{added}/events") as stream:
            async for line in stream.aiter_lines():
                if line.startswith("event: "):
                    kinds.append(line.removeprefix("event: "))
        assert kinds.count("state") == 3  # queued, running, succeeded: replayed from the store
        sleeping = await submit_job(client, "sleep", 30)
        await wait_state(client, sleeping, "running")
        canceled = await client.post(f"/jobs/{sleeping}/cancel")
        assert canceled.status_code == 200 and canceled.json()["state"] == "canceled"

        async def ready() -> bool:  # the store writable, and the canceled job's worker replaced
            return (await client.get("/ready")).status_code == 200

        await wait_until(ready, what="the service ready")


async def test_after_a_kill_9_on_postgres_nothing_acknowledged_is_lost(
    service_process: Callable[..., ServiceProcess], postgres_database: str
) -> None:
    # the job it ran is requeued once its lease runs out, by the service started after it
    service = service_process(CONVEYOR_DATABASE=postgres_database, CONVEYOR_LEASE_S="1.5")
    service.start()
    await service.wait_ready()
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
        running = await submit_job(client, "sleep", 30)
        await wait_state(client, running, "running")
        accepted = [await submit_job(client, "add", n, n) for n in range(20)]
        service.kill()
        service.start()
        await service.wait_ready()
        for n, job_id in enumerate(accepted):
            assert (await finished(client, job_id))["result"] == 2 * n

        async def running_again() -> Any:
            job = (await client.get(f"/jobs/{running}")).json()
            return job if job["state"] == "running" and job["attempt"] > 1 else None

        # (the dead service's attempt shows as running until its lease runs out)
        again = await wait_until(running_again, what="the sleep to run again")
        assert again["attempt"] == 2 and again["retries"] == 0  # an interruption spends none
        assert [a["outcome"] for a in again["attempts"]] == ["interrupted"]


def test_a_database_that_cannot_be_reached_is_one_clear_line(tmp_path: Path) -> None:
    """The password never shows, in the error or anywhere else."""
    url = "postgresql://conveyor:s3cret@127.0.0.1:1/nowhere"
    done = subprocess.run(
        [sys.executable, "-c", "from service.cli import main; main()", "serve"],
        env={**os.environ, "PYTHONPATH": str(ROOT), "CONVEYOR_DATABASE": url},
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("conveyor: cannot use the database"), lines
    assert "s3cret" not in done.stderr and "***" in lines[0]

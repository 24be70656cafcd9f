"""Graceful shutdown: SIGTERM drains while the API still answers, then stops and requeues."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

import httpx

from .conftest import TASKS, ServiceProcess, process_gone, submit_job, wait_state, wait_until

T = "tests.sample_tasks."
Factory = Callable[..., ServiceProcess]


async def draining(client: httpx.AsyncClient) -> bool:
    response = await client.get("/health")
    return response.status_code == 503 and response.json()["status"] == "draining"


def started(marker: Path) -> bool:
    """Whether the sleep task has written its pid to ``marker``."""
    return marker.exists() and marker.read_text().endswith("\n")


async def exit_code(service: ServiceProcess) -> int:
    """The service's exit status, once it has stopped by itself."""
    proc = service.proc
    assert proc is not None
    await wait_until(lambda: proc.poll() is not None, timeout_s=20, what="the service to exit")
    return proc.returncode


async def test_sigterm_lets_running_jobs_finish_while_the_api_answers(
    service_process: Factory, tmp_path: Path
) -> None:
    service = service_process(CONVEYOR_CONCURRENCY="1", CONVEYOR_SHUTDOWN_GRACE_S="60")
    service.start()
    await service.wait_ready()
    gate = tmp_path / "open"
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
        running = await submit_job(client, "gate", str(gate))
        waiting = await submit_job(
            client, "add", 1, 2
        )  # queued behind it: not started in the drain
        await wait_state(client, running, "running")
        assert service.proc is not None
        service.proc.send_signal(signal.SIGTERM)
        await wait_until(lambda: draining(client), what="the drain")
        refused = await client.post("/jobs", json={"task": T + "add", "args": [1, 1]})
        assert refused.status_code == 503 and refused.json()["error"] == "shutting_down"
        assert refused.headers["Retry-After"]
        assert (await client.get(f"/jobs/{running}")).json()["state"] == "running"
        gate.touch()
        assert await exit_code(service) == 0
        service.start()
        await service.wait_ready()
        done = await wait_state(client, running, "succeeded")
        assert done["attempt"] == 1  # finished in the drain: never stopped, never run again
        later = await wait_state(client, waiting, "succeeded")
        assert [a["number"] for a in later["attempts"]] == [1]
        assert len((await client.get("/jobs")).json()["jobs"]) == 2  # the refused submit: none


async def test_a_cancel_during_the_drain_works_and_a_second_sigterm_stops_now(
    service_process: Factory, tmp_path: Path
) -> None:
    service = service_process(CONVEYOR_CONCURRENCY="2", CONVEYOR_SHUTDOWN_GRACE_S="60")
    service.start()
    await service.wait_ready()
    first, second = tmp_path / "first", tmp_path / "second"
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
        canceled = await submit_job(client, "sleep", 60, str(first))
        stopped = await submit_job(client, "sleep", 60, str(second))
        await wait_until(lambda: started(first) and started(second), what="both jobs to start")
        assert service.proc is not None
        service.proc.send_signal(signal.SIGTERM)
        await wait_until(lambda: draining(client), what="the drain")
        response = await client.post(f"/jobs/{canceled}/cancel")
        assert response.status_code == 200 and response.json()["state"] == "canceled"
        assert process_gone(int(first.read_text().split()[0]))
        service.proc.send_signal(signal.SIGTERM)  # do not wait out the grace
        assert await exit_code(service) == 0
        assert process_gone(int(second.read_text().split()[0]))
        service.start()
        await service.wait_ready()
        again = await wait_state(client, stopped, "running")
        assert again["attempt"] == 2 and again["attempts"][0]["outcome"] == "interrupted"
        assert (await client.get(f"/jobs/{canceled}")).json()["state"] == "canceled"
        await client.post(f"/jobs/{stopped}/cancel")


async def test_jobs_still_running_after_the_grace_are_stopped_and_requeued(
    service_process: Factory, tmp_path: Path
) -> None:
    service = service_process(CONVEYOR_CONCURRENCY="1", CONVEYOR_SHUTDOWN_GRACE_S="0.5")
    service.start()
    await service.wait_ready()
    marker = tmp_path / "runs"
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
        job_id = await submit_job(client, "sleep", 60, str(marker))
        await wait_until(lambda: started(marker), what="the job to start")
        assert service.terminate() == 0
        assert process_gone(int(marker.read_text().split()[0]))
        assert "still running: stopping and requeueing" in service.log.read_text()
        service.start()
        await service.wait_ready()
        assert (await wait_state(client, job_id, "running"))["attempt"] == 2
        await client.post(f"/jobs/{job_id}/cancel")


async def test_a_stop_under_load_drains_requeues_and_loses_nothing(
    service_process: Factory,
) -> None:
    """SIGTERM with 1,000 jobs queued and two running: submits are refused meanwhile, the
    service exits 0 within its grace, and at the next start every job is there."""
    service = service_process(CONVEYOR_CONCURRENCY="2", CONVEYOR_SHUTDOWN_GRACE_S="1")
    service.start()
    await service.wait_ready()
    assert service.proc is not None
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
        ids: list[str] = []
        for _ in range(2):
            batch = [{"task": f"{TASKS}.sleep", "args": [30]} for _ in range(500)]
            ids += [
                j["id"]
                for j in (await client.post("/jobs/batch", json={"jobs": batch})).json()["jobs"]
            ]

        async def two_running() -> bool:
            running: int = (await client.get("/stats")).json()["by_state"]["running"]
            return running == 2

        await wait_until(two_running, what="two jobs running")
        service.proc.send_signal(signal.SIGTERM)

        async def refused() -> bool:
            try:
                answer = await client.post("/jobs", json={"task": f"{TASKS}.add", "args": [1, 2]})
            except httpx.TransportError:
                return False
            return answer.status_code == 503 and answer.json()["error"] == "shutting_down"

        await wait_until(refused, what="a submit refused while draining")
        assert await asyncio.to_thread(service.proc.wait, 20) == 0
        service.start()
        await service.wait_ready()
        counts = (await client.get("/stats")).json()["by_state"]
        assert counts["queued"] + counts["running"] == 1000 and counts["succeeded"] == 0
        listed: set[str] = set()
        cursor: str | None = None
        while True:
            params: dict[str, str | int] = {"limit": 1000, "fields": "state"}
            if cursor:
                params["cursor"] = cursor
            page = (await client.get("/jobs", params=params)).json()
            listed |= {j["id"] for j in page["jobs"]}
            cursor = page["next"]
            if cursor is None:
                break
        assert listed == set(ids)  # the refused submit made nothing
        assert "still running: stopping and requeueing" in service.log.read_text()

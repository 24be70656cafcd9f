"""Worker start and stop hooks: set-up paid once per worker, reachable from tasks, failures
reported instead of crash-looping."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service import hooks
from service.pool import Outcome, ProcessPool
from service.recycling import WorkerLimits
from service.settings import Settings

from .conftest import process_gone, running_app, wait_until

HOOKS = "tests.hook_tasks"
FAILING = "tests.failing_hook_tasks"


@pytest.fixture
def hook_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Where the hooks of the workers started in this test record what they do."""
    monkeypatch.setenv("HOOK_TEST_DIR", str(tmp_path))
    yield tmp_path


def recorded(hook_dir: Path) -> list[str]:
    path = hook_dir / "hooks.log"
    return path.read_text().splitlines() if path.exists() else []


def pool_of_one(module: str, **limits: Any) -> ProcessPool:
    return ProcessPool(
        1, [module], grace_s=1.0, on_progress=lambda *_: None, limits=WorkerLimits(**limits)
    )


async def run(pool: ProcessPool, task: str, *args: Any) -> Outcome:
    worker = await pool.acquire()
    return await pool.run(worker, "job-1", task, list(args), {})


async def test_start_hooks_run_once_per_worker_and_tasks_reach_what_they_prepared(
    hook_dir: Path,
) -> None:
    async with pool_of_one(HOOKS) as pool:
        states = [(await run(pool, f"{HOOKS}.state")).result for _ in range(3)]
    pid = states[0]["pid"]
    assert states == [{"pid": pid, "opened_by": pid}] * 3
    assert recorded(hook_dir) == [f"start {pid}", f"stop {pid}"]  # stopped with the pool


async def test_async_hooks_share_the_loop_of_async_tasks(hook_dir: Path) -> None:
    async with pool_of_one(HOOKS) as pool:
        first = (await run(pool, f"{HOOKS}.on_the_hooks_loop")).result
        await run(pool, f"{HOOKS}.state")
        second = (await run(pool, f"{HOOKS}.on_the_hooks_loop")).result
    assert first["same_loop"] and second["same_loop"]
    # what the hook started runs on across jobs: the end of a job cancels only the job's own
    assert second["heartbeat_alive"] and second["beats"] > first["beats"]


async def test_stop_hooks_run_when_a_worker_is_recycled(hook_dir: Path) -> None:
    async with pool_of_one(HOOKS, max_jobs=1) as pool:
        first = (await run(pool, f"{HOOKS}.state")).result["pid"]
        await wait_until(lambda: f"stop {first}" in recorded(hook_dir), what="the stop hook")
        second = (await run(pool, f"{HOOKS}.state")).result["pid"]
    assert second != first
    assert recorded(hook_dir).count(f"start {second}") == 1


async def test_a_stop_hook_that_hangs_is_cut_short(hook_dir: Path) -> None:
    (hook_dir / "hang_on_stop").touch()
    async with pool_of_one(HOOKS, max_jobs=1, stop_timeout_s=0.2) as pool:
        first = (await run(pool, f"{HOOKS}.state")).result["pid"]
        await wait_until(lambda: process_gone(first), what="the hung worker to be killed")
        assert (await run(pool, f"{HOOKS}.state")).result["pid"] != first
        (hook_dir / "hang_on_stop").unlink()


async def test_stop_hooks_run_when_the_service_stops(settings: Settings, hook_dir: Path) -> None:
    with_hooks = dataclasses.replace(settings, tasks=(HOOKS,))
    async with running_app(with_hooks) as (_, client):
        await wait_until(lambda: len(recorded(hook_dir)) == 2, what="both workers started")

        async def both_ready() -> bool:
            # a worker stops by its hooks once the pool has heard it is ready (its start hook
            # may have run a moment before): one still starting is killed
            workers = (await (await client.get("/health")).get_json())["workers"]["workers"]
            return len(workers) == 2 and all(worker["ready"] for worker in workers)

        await wait_until(both_ready, what="both workers ready")
    starts = {line.split()[1] for line in recorded(hook_dir) if line.startswith("start")}
    stops = {line.split()[1] for line in recorded(hook_dir) if line.startswith("stop")}
    assert len(starts) == 2 and stops == starts


def attempts(hook_dir: Path) -> list[float]:
    path = hook_dir / "attempts"
    return [float(t) for t in path.read_text().split()] if path.exists() else []


async def test_a_failing_start_hook_is_reported_once_and_retried_ever_more_slowly(
    hook_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (hook_dir / "broken").touch()
    caplog.set_level(logging.INFO, logger="conveyor.pool")
    async with pool_of_one(FAILING) as pool:
        await wait_until(lambda: len(attempts(hook_dir)) >= 3, what="three attempts")
        error = pool.status()["start_error"]
        assert error["type"] == "WorkerStartError"
        assert error["message"] == (
            f"on_worker_start hook {FAILING}.connect failed: "
            "ConnectionRefusedError: the database is down"
        )
        assert 'raise ConnectionRefusedError("the database is down")' in error["traceback"]
        assert pool.status()["alive"] == 0
        times = attempts(hook_dir)
        assert times[2] - times[1] >= 0.5  # backing off, not spinning
        pool_records = [r for r in caplog.records if r.name == "conveyor.pool"]
        assert ["the database is down" in r.getMessage() for r in pool_records] == [True]
        (hook_dir / "broken").unlink()  # the database is back
        await wait_until(lambda: pool.status()["alive"] == 1, what="a worker that starts")
        assert pool.status()["start_error"] is None
        assert (await run(pool, f"{FAILING}.ping")).result == "pong"


async def test_jobs_wait_queued_while_workers_cannot_start(
    settings: Settings, hook_dir: Path
) -> None:
    (hook_dir / "broken").touch()
    failing = dataclasses.replace(settings, tasks=(FAILING,), concurrency=1)
    async with running_app(failing) as (_, client):

        async def unhealthy() -> Any:
            response = await client.get("/health")
            return await response.get_json() if response.status_code == 503 else None

        body = await wait_until(unhealthy, what="health to report the failing hook")
        assert body["status"] == "degraded"
        assert body["workers"]["start_error"]["type"] == "WorkerStartError"
        assert "the database is down" in body["workers"]["last_start_error"]
        submitted = await client.post("/jobs", json={"task": f"{FAILING}.ping"})
        job_id = (await submitted.get_json())["id"]
        await wait_until(lambda: len(attempts(hook_dir)) >= 2, what="another attempt")
        assert (await (await client.get(f"/jobs/{job_id}")).get_json())["state"] == "queued"
        (hook_dir / "broken").unlink()

        async def succeeded() -> Any:
            job = await (await client.get(f"/jobs/{job_id}")).get_json()
            return job if job["state"] == "succeeded" else None

        assert (await wait_until(succeeded, what="the job to run at last"))["result"] == "pong"
        assert (await client.get("/health")).status_code == 200


async def test_public_health_names_the_start_error_without_its_traceback(
    settings: Settings, hook_dir: Path
) -> None:
    (hook_dir / "broken").touch()
    failing = dataclasses.replace(settings, tasks=(FAILING,), concurrency=1, token="s3cret")
    async with running_app(failing) as (_, client):

        async def start_error(headers: dict[str, str]) -> Any:
            body = await (await client.get("/health", headers=headers)).get_json()
            return body["workers"]["start_error"]

        public = await wait_until(lambda: start_error({}), what="the start error")
        assert "the database is down" in public["message"] and public["traceback"] is None
        private = await start_error({"Authorization": "Bearer s3cret"})
        assert "Traceback" in private["traceback"]


def test_hooks_register_once_and_stop_in_reverse_order() -> None:
    calls: list[str] = []

    def first() -> None:
        calls.append("first")

    def second() -> None:
        calls.append("second")

    try:
        hooks.on_worker_stop(first)
        hooks.on_worker_stop(second)
        hooks.on_worker_stop(first)  # a module imported again registers the same hook
        assert [h for h in hooks.stop_hooks() if h in (first, second)] == [second, first]
        with pytest.raises(TypeError, match="on_worker_start needs a function"):
            hooks.on_worker_start(42)  # type: ignore[type-var]
    finally:
        for fn in (first, second):
            hooks._stop_hooks.pop(hooks.origin(fn), None)

"""The pool against real worker processes: run, crash, kill whole trees, replace, die with us."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from service.jobs import Progress
from service.pool import Outcome, ProcessPool, describe_exit

from .conftest import ROOT, TASKS, process_gone, wait_until

T = "tests.sample_tasks."


@pytest.fixture
async def pool() -> AsyncIterator[ProcessPool]:
    async with ProcessPool(2, [TASKS], grace_s=1.0, on_progress=lambda *_: None) as pool:
        yield pool


async def run(pool: ProcessPool, task: str, *args: Any, **kwargs: Any) -> Outcome:
    worker = await pool.acquire()
    return await pool.run(worker, "job-1", T + task, list(args), kwargs)


async def test_runs_a_job_and_returns_its_result(pool: ProcessPool) -> None:
    assert await run(pool, "add", 2, 3) == Outcome(result=5)
    assert await run(pool, "echo", 1, key=[2]) == Outcome(
        result={"args": [1], "kwargs": {"key": [2]}}
    )


async def test_runs_async_tasks(pool: ProcessPool) -> None:
    assert (await run(pool, "async_add", 1, 41)).result == 42


async def test_task_error_has_type_message_and_traceback(pool: ProcessPool) -> None:
    outcome = await run(pool, "fail", "boom")
    assert outcome.error is not None
    assert (outcome.error.type, outcome.error.message) == ("ValueError", "boom")
    assert outcome.error.traceback is not None
    assert "raise ValueError(message)" in outcome.error.traceback


async def test_result_that_is_not_json_fails_clearly(pool: ProcessPool) -> None:
    outcome = await run(pool, "unserializable")
    assert outcome.error is not None
    assert outcome.error.type == "UnserializableResult"
    assert "set" in outcome.error.message


async def test_unknown_task_in_worker_fails_the_job(pool: ProcessPool) -> None:
    outcome = await run(pool, "no_such_task")
    assert outcome.error is not None and outcome.error.type == "UnknownTask"


async def test_progress_is_coalesced_and_the_last_value_arrives() -> None:
    seen: list[tuple[str, Progress]] = []
    async with ProcessPool(1, [TASKS], grace_s=1.0, on_progress=lambda *a: seen.append(a)) as pool:
        assert (await run(pool, "steps", 5000)).result == 5000
    assert seen[-1] == ("job-1", Progress(5000, 5000, "step 5000"))
    assert len(seen) < 100  # a tight loop of 5000 updates is not 5000 messages


async def test_workers_are_long_lived(pool: ProcessPool) -> None:
    pids = {(await run(pool, "pid")).result for _ in range(6)}
    assert len(pids) <= 2


@pytest.mark.parametrize(
    ("task", "args", "expected"),
    [
        ("segfault", [], "killed by SIGSEGV"),
        ("hard_exit", [7], "exited with code 7"),
    ],
)
async def test_a_crash_fails_the_job_and_the_worker_is_replaced(
    pool: ProcessPool, task: str, args: list[Any], expected: str
) -> None:
    await wait_until(lambda: pool.status()["alive"] == 2, what="two workers")
    before = {w["pid"] for w in pool.status()["workers"]}
    outcome = await run(pool, task, *args)
    assert outcome.error is not None and outcome.error.type == "WorkerCrashed"
    assert expected in outcome.error.message
    await wait_until(lambda: pool.status()["alive"] == 2, what="a replacement worker")
    after = {w["pid"] for w in pool.status()["workers"]}
    assert len(after - before) == 1
    assert (await run(pool, "add", 1, 1)).result == 2


async def _start_in_background(
    pool: ProcessPool, task: str, *args: Any
) -> tuple[Any, asyncio.Task[Outcome]]:
    worker = await pool.acquire()
    running = asyncio.create_task(pool.run(worker, "job-1", T + task, list(args), {}))
    return worker, running


async def test_kill_takes_the_whole_process_tree(pool: ProcessPool, tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    worker, running = await _start_in_background(pool, "spawn_tree", str(pidfile))
    await wait_until(Path(str(pidfile) + ".ready").exists, what="the job's children")
    pids = [worker.pid, *map(int, pidfile.read_text().split())]
    assert len(pids) == 3 and not any(process_gone(p) for p in pids)
    await pool.kill(worker)
    assert [process_gone(p) for p in pids] == [True, True, True]
    assert (await running).error is not None
    await wait_until(lambda: pool.status()["alive"] == 2, what="capacity restored")


async def test_kill_escalates_to_sigkill_for_a_job_that_ignores_sigterm(
    pool: ProcessPool, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    worker, running = await _start_in_background(pool, "ignore_sigterm", str(started))
    await wait_until(started.exists, what="the job to start")
    await pool.kill(worker)
    assert process_gone(worker.pid)
    assert worker.proc.returncode == -signal.SIGKILL
    await running


@pytest.mark.parametrize("task", ["clean_up_on_sigterm", "finally_on_sigterm"])
async def test_sigterm_lets_the_job_clean_up(pool: ProcessPool, tmp_path: Path, task: str) -> None:
    started, cleaned = tmp_path / "started", tmp_path / "cleaned"
    worker, running = await _start_in_background(pool, task, str(started), str(cleaned))
    await wait_until(started.exists, what="the job to start")
    await pool.kill(worker)
    assert cleaned.exists()
    assert process_gone(worker.pid)
    assert worker.proc.returncode != -signal.SIGKILL  # it went on SIGTERM, within the grace
    await running


async def test_a_job_that_raises_on_sigterm_still_ends(pool: ProcessPool, tmp_path: Path) -> None:
    started = tmp_path / "started"
    worker, running = await _start_in_background(pool, "raise_on_sigterm", str(started))
    await wait_until(started.exists, what="the job to start")
    await pool.kill(worker)
    assert process_gone(worker.pid)
    await running
    await wait_until(lambda: pool.status()["alive"] == 2, what="capacity restored")


HOST = """
import asyncio, sys
from service.pool import ProcessPool

async def main():
    async with ProcessPool(1, [sys.argv[1]], grace_s=1, on_progress=lambda *a: None) as pool:
        worker = await pool.acquire()
        print(worker.pid, flush=True)
        await pool.run(worker, "j", sys.argv[1] + ".spawn_tree", [sys.argv[2]], {})

asyncio.run(main())
"""


async def test_workers_and_their_children_die_with_the_service(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    with subprocess.Popen(
        [sys.executable, "-c", HOST, TASKS, str(pidfile)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    ) as host:  # fmt: skip
        try:
            assert host.stdout is not None
            worker_pid = int(host.stdout.readline())
            await wait_until(Path(str(pidfile) + ".ready").exists, what="the job's children")
            pids = [worker_pid, *map(int, pidfile.read_text().split())]
            host.kill()  # kill -9: no clean-up code of the service runs
            host.wait(5)
            await wait_until(
                lambda: all(process_gone(p) for p in pids), timeout_s=5, what="the tree to die"
            )
        finally:
            if host.poll() is None:
                host.kill()


def test_describe_exit() -> None:
    assert describe_exit(-9) == "the worker process was killed by SIGKILL (exit code -9)"
    assert describe_exit(3) == "the worker process exited with code 3"
    assert "signal 99" in describe_exit(-99)

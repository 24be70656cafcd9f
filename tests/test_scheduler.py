"""The scheduler with a real store and real worker processes, at the edges of a job's life."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from service.context import MAX_PROGRESS_MESSAGE_CHARS
from service.errors import InvalidTransition
from service.events import Broker
from service.jobs import Job, JobSpec, JobState, Progress
from service.options import JobOptions
from service.pool import ProcessPool
from service.scheduler import Scheduler
from service.store.sqlite import SqliteStore
from service.tasks import load_tasks
from service.worker import MAX_ERROR_MESSAGE_CHARS

from .conftest import TASKS, wait_until

T = TASKS + "."


@dataclass
class Service:
    db: SqliteStore
    pool: ProcessPool
    scheduler: Scheduler

    async def submit(self, task: str, *args: Any) -> Job:
        return (await self.scheduler.submit(JobSpec(T + task, list(args)))).job

    async def wait_state(self, job_id: str, *states: JobState) -> Job:
        async def reached() -> Job | None:
            job = await self.db.get_job(job_id)
            return job if job.state in states else None

        job: Job = await wait_until(reached, what=f"job {job_id} to be {states}")
        return job


@pytest.fixture
async def one_worker(tmp_path: Path) -> AsyncIterator[Service]:
    """A scheduler with a single worker: which job runs on it is never in doubt."""
    schedulers: list[Scheduler] = []

    def on_progress(job_id: str, progress: Progress) -> None:
        schedulers[0].on_progress(job_id, progress)

    async with (
        SqliteStore(str(tmp_path / "db"), on_commit=Broker().publish) as db,
        ProcessPool(1, [TASKS], grace_s=1.0, on_progress=on_progress) as pool,
        Scheduler(db, pool, load_tasks([TASKS]), max_interruptions=3) as scheduler,
    ):
        schedulers.append(scheduler)
        yield Service(db, pool, scheduler)


async def test_a_late_cancel_of_a_finished_job_leaves_the_next_job_alone(
    one_worker: Service,
) -> None:
    first = await one_worker.submit("sleep", 0.05)
    second = await one_worker.submit("sleep", 1.0)
    await one_worker.wait_state(second.id, JobState.RUNNING)
    with pytest.raises(InvalidTransition):
        await one_worker.scheduler.cancel(first.id)
    done = await one_worker.wait_state(second.id, JobState.SUCCEEDED, JobState.FAILED)
    assert done.state is JobState.SUCCEEDED


async def test_a_worker_that_dies_while_idle_does_not_strand_the_next_job(
    one_worker: Service,
) -> None:
    pool = one_worker.pool
    doomed = await one_worker.submit("die_later", 0.2)  # its worker dies 0.2 s after it ends
    await one_worker.wait_state(doomed.id, JobState.SUCCEEDED)
    first_pid = pool.status()["workers"][0]["pid"]
    await wait_until(
        lambda: any(w["pid"] != first_pid and w["ready"] for w in pool.status()["workers"]),
        what="the replacement worker",
    )
    later = await one_worker.submit("add", 2, 3)  # the dispatcher still held the dead one
    assert (await one_worker.wait_state(later.id, JobState.SUCCEEDED)).result == 5


async def test_an_enormous_error_message_is_cut_and_the_worker_survives(
    one_worker: Service,
) -> None:
    failed = await one_worker.submit("fail", "x" * 9_000_000)
    job = await one_worker.wait_state(failed.id, JobState.FAILED)
    assert job.error is not None and job.error.type == "ValueError"
    assert len(job.error.message) < MAX_ERROR_MESSAGE_CHARS + 100
    ok = await one_worker.submit("add", 1, 1)
    assert (await one_worker.wait_state(ok.id, JobState.SUCCEEDED)).result == 2


async def test_an_error_that_is_not_utf8_is_reported(one_worker: Service) -> None:
    failed = await one_worker.submit("surrogate_error")
    job = await one_worker.wait_state(failed.id, JobState.FAILED)
    assert job.error is not None and job.error.type == "ValueError"
    assert "report-" in job.error.message


async def test_an_enormous_progress_message_is_cut(one_worker: Service) -> None:
    chatty = await one_worker.submit("chatty", 20_000_000)
    job = await one_worker.wait_state(chatty.id, JobState.SUCCEEDED)
    assert job.result == "ok"
    assert job.progress is not None and job.progress.message is not None
    assert len(job.progress.message) < MAX_PROGRESS_MESSAGE_CHARS + 100


@pytest.mark.parametrize(
    ("max_interruptions", "state"), [(1, JobState.SUCCEEDED), (0, JobState.FAILED)]
)
async def test_a_start_the_service_died_before_recording_still_counts(
    tmp_path: Path, max_interruptions: int, state: JobState
) -> None:
    path = str(tmp_path / "db")
    async with SqliteStore(path, on_commit=Broker().publish) as db:
        job = Job(id="j1", task=T + "add", args=[1, 2], kwargs={}, state=JobState.QUEUED,
                  created_at=1.0)  # fmt: skip
        await db.insert(job)
    # the service handed it to a worker, journaled the start, and died before the commit
    with open(path + ".started", "a") as journal:
        journal.write("j1 1\nj1 ")  # and a line cut short by the crash
    async with (
        SqliteStore(path, on_commit=Broker().publish) as db,
        ProcessPool(1, [TASKS], grace_s=1.0, on_progress=lambda *_: None) as pool,
        Scheduler(db, pool, load_tasks([TASKS]), max_interruptions=max_interruptions) as sched,
    ):
        ended = await Service(db, pool, sched).wait_state("j1", state)
    if state is JobState.FAILED:  # the lost start was its one allowed interruption too many
        assert ended.error is not None and ended.error.type == "Interrupted"
        assert ended.attempt == 1
    else:  # requeued as an interrupted attempt 1, then run again as attempt 2
        assert (ended.attempt, ended.interruptions, ended.result) == (2, 1, 3)


async def test_a_soft_timeout_leaves_no_child_tasks_behind(
    one_worker: Service, tmp_path: Path
) -> None:
    marker = tmp_path / "ticks"
    spec = JobSpec(T + "fan_out", [str(marker)], options=JobOptions(soft_timeout_s=0.2))
    fanned = (await one_worker.scheduler.submit(spec)).job
    job = await one_worker.wait_state(fanned.id, JobState.FAILED, JobState.SUCCEEDED)
    assert job.error is not None and job.error.type == "SoftTimeout"
    ticks = len(marker.read_text().split())
    after = await one_worker.submit("async_sleep", 0.3)  # the same worker, the same loop
    await one_worker.wait_state(after.id, JobState.SUCCEEDED)
    assert len(marker.read_text().split()) == ticks


async def test_a_task_that_cancels_itself_is_not_a_soft_timeout(one_worker: Service) -> None:
    job = await one_worker.wait_state(
        (await one_worker.submit("cancels_itself")).id, JobState.FAILED
    )
    assert job.error is not None and job.error.type == "RuntimeError"
    ok = await one_worker.submit("add", 1, 1)
    assert (await one_worker.wait_state(ok.id, JobState.SUCCEEDED)).result == 2

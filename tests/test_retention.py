"""The retention sweep prunes finished jobs, their events and old Idempotency-Keys."""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
from pathlib import Path

import httpx

from service.db import IdempotencyClaim, Transaction
from service.jobs import TERMINAL, Job, JobState, transition
from service.logs import LogEntry
from service.retention import PRUNE_CHUNK, RetentionSweep
from service.settings import Settings
from service.store.sqlite import SqliteStore

from .conftest import finished, live_server, submit_job, wait_until

T = "tests.sample_tasks."


def queued(number: int, at: float) -> Job:
    return Job(f"job-{number:05}", T + "add", [1, 1], {}, JobState.QUEUED, created_at=at)


def ended(job: Job, state: JobState, at: float) -> Job:
    return transition(transition(job, JobState.RUNNING, at), state, at)


async def test_the_sweep_prunes_only_what_finished_long_enough_ago(tmp_path: Path) -> None:
    now = [10_000.0]
    async with SqliteStore(str(tmp_path / "c.db"), on_commit=lambda events: None) as db:
        states = [JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED]
        old = [queued(i, 0.0) for i in range(PRUNE_CHUNK * 2 + 7)]  # more than one chunk
        await db.insert(*old)

        async def finish_all(batch: Transaction) -> None:
            for index, job in enumerate(old):
                await batch.get(job.id)  # what put() needs: the job as it was
                batch.put(ended(job, states[index % 3], 100.0))

        await db.transact(finish_all)
        recent = queued(90_000, 0.0)
        waiting = queued(90_001, 0.0)  # unfinished jobs stay however old they are
        await db.insert(recent, waiting)
        await db.update(recent.id, lambda j: ended(j, JobState.SUCCEEDED, 9_500.0))
        line = [LogEntry(100.0, "stdout", "hello")]
        await db.append_logs_soon(old[0].id, line)
        await db.append_logs_soon(recent.id, line)
        sweep = RetentionSweep(
            db, retention_s=1_000.0, idempotency_ttl_s=50.0, clock=lambda: now[0]
        )
        assert await sweep.sweep() == len(old)
        remaining, _ = await db.list_jobs(limit=1000)
        assert sorted(j.id for j in remaining) == [recent.id, waiting.id]
        events = await db.events_after(0, limit=10_000)
        assert {e.job_id for e in events if e.kind != "pruned"} == {recent.id, waiting.id}
        # what went is told in events of its own, which the store's counts follow too
        notes = [e for e in events if e.kind == "pruned"]
        assert {e.job_id for e in notes} == {""}
        told = sum(r["jobs"] for e in notes for r in e.data["removed"])
        assert told == len(old) and db.stats.as_json(now[0])["total"] == 2
        assert [e.text for e in (await db.job_logs(recent.id))[0]] == ["hello"]
        with contextlib.closing(sqlite3.connect(db.path)) as conn:
            leftover = conn.execute("SELECT count(*) FROM job_logs").fetchone()[0]
        assert leftover == 1  # the pruned job's lines went with it
        now[0] = 10_600.0
        assert await sweep.sweep() == 1
        assert [j.id for j in (await db.list_jobs())[0]] == [waiting.id]
        assert all(s in TERMINAL for s in states)


async def test_the_sweep_forgets_old_idempotency_keys(tmp_path: Path) -> None:
    async with SqliteStore(str(tmp_path / "c.db"), on_commit=lambda events: None) as db:
        claim = IdempotencyClaim("k", "digest", at=0.0, ttl_s=10**9)  # replayed if remembered
        await db.submit([queued(1, 0.0)], claim)
        await RetentionSweep(db, retention_s=0, idempotency_ttl_s=100.0, clock=lambda: 50.0).sweep()
        assert (await db.submit([queued(2, 0.0)], claim))[0][1] is False
        await RetentionSweep(
            db, retention_s=0, idempotency_ttl_s=100.0, clock=lambda: 101.0
        ).sweep()
        assert (await db.submit([queued(3, 0.0)], claim))[0][1] is True
        assert len((await db.list_jobs())[0]) == 2  # retention 0: finished or not, all kept


async def test_the_service_prunes_as_it_runs(settings: Settings) -> None:
    settings = dataclasses.replace(settings, retention_s=1.0)
    async with live_server(settings) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        job_id = await submit_job(client, "add", 1, 2)
        await finished(client, job_id)

        async def gone() -> bool:
            return (await client.get(f"/jobs/{job_id}")).status_code == 404

        await wait_until(gone, timeout_s=15, what="the finished job to be pruned")
        assert (await client.get("/health")).status_code == 200


def test_retention_setting() -> None:
    assert Settings().retention_s == 7 * 24 * 3600
    assert Settings.from_env({"CONVEYOR_RETENTION_S": "0"}).retention_s == 0

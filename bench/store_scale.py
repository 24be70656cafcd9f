"""A store of a million finished jobs, and what ``python -m bench`` reads from a service on it:
its list pages, its submits, and how fast the retention sweep prunes.

The jobs are written straight into a fresh store before the service starts (through the store's
own schema and row format: ``service.db``), as a store that has run for months would hold them;
submitting and running a million jobs over HTTP first would take the benchmark a quarter of an
hour and measure nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import time
import uuid
from pathlib import Path

import orjson

from service.jobs import Job, JobState
from service.store.rows import job_to_row
from service.store.sqlite import INSERT_EVENT, INSERT_JOB, SqliteStore

from .bench_core import NOOP, BenchError, percentile
from .rawhttp import Connection

Figures = dict[str, float]
SEED_CHUNK = 10_000  # rows a transaction while seeding
TASKS = ("reports.build", "imports.load", "mail.send", NOOP)  # a few tasks, to filter by
PAGE_READS = 50  # of each kind of page


async def seed(path: Path, jobs: int, finished_at: float) -> None:
    """A store at ``path`` holding ``jobs`` finished jobs (one in 20 failed), each with its
    terminal event, finished over the hour before ``finished_at``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    async with SqliteStore(str(path), on_commit=lambda events: None):  # its schema, as it makes it
        pass
    # closed at the end, which copies the WAL in: the file alone is then the whole store
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")  # only while seeding: a crash means a rerun
        event_id = 1
        for start in range(0, jobs, SEED_CHUNK):
            rows, events = [], []
            for n in range(start, min(start + SEED_CHUNK, jobs)):
                done = finished_at - 3600 * (1 - n / jobs)
                state = JobState.FAILED if n % 20 == 0 else JobState.SUCCEEDED
                job = Job(
                    id=str(uuid.uuid4()), task=TASKS[n % len(TASKS)], args=[n, "report"],
                    kwargs={"n": n}, state=state, created_at=done - 0.5, attempt=1,
                    started_at=done - 0.25, finished_at=done,
                    result={"rows": n} if state is JobState.SUCCEEDED else None,
                )  # fmt: skip
                rows.append(job_to_row(job))
                data = {"job_id": job.id, "task": job.task, "state": state.value}
                events.append((event_id, job.id, "job", done, orjson.dumps(data).decode()))
                event_id += 1
            conn.executemany(INSERT_JOB, rows)
            conn.executemany(INSERT_EVENT, events)
            conn.commit()


_seeded: dict[int, Path] = {}  # a store of each size seeded in this run, copied for the next


async def seed_once(path: Path, jobs: int, finished_at: float) -> None:
    """``seed``, or a copy of the store of ``jobs`` already seeded in this process: the runs
    of a workload each need a fresh one, and writing a million rows takes a minute."""
    earlier = _seeded.get(jobs)
    if earlier is not None and earlier.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(earlier, path)
        return
    await seed(path, jobs, finished_at)
    pristine = path.with_name("seeded.db")  # the service below changes its own copy
    shutil.copyfile(path, pristine)
    _seeded[jobs] = pristine


async def page_times_ms(connection: Connection, path: str, pages: int) -> list[float]:
    """``pages`` reads of ``path`` (a list page), each timed; following ``next`` cursors."""
    times_ms: list[float] = []
    cursor = None
    for _ in range(pages):
        url = path if cursor is None else f"{path}{'&' if '?' in path else '?'}cursor={cursor}"
        started = time.perf_counter()
        page = await connection.json("GET", url)
        times_ms.append((time.perf_counter() - started) * 1000)
        if not isinstance(page, dict) or not page.get("jobs"):
            raise BenchError(f"GET {url}: no jobs in {str(page)[:200]}")
        cursor = page.get("next")
    return times_ms


async def submit_times_ms(connection: Connection, seconds: float) -> list[float]:
    """Submits one by one for ``seconds``, each timed (held: nothing runs them)."""
    times_ms: list[float] = []
    body = {"task": NOOP, "delay_s": 3600}
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        await connection.json("POST", "/jobs", body, expect=(202,))
        times_ms.append((time.perf_counter() - started) * 1000)
    return times_ms


async def finished_jobs(connection: Connection) -> int:
    """How many finished jobs the store holds (``GET /stats``)."""
    stats = await connection.json("GET", "/stats")
    if not isinstance(stats, dict):
        raise BenchError(f"GET /stats: {stats!r}")
    return sum(stats["by_state"][state] for state in ("succeeded", "failed", "canceled"))


async def until_pruned(connection: Connection, timeout_s: float) -> float:
    """Seconds until the store holds no finished job."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if await finished_jobs(connection) == 0:
            return time.perf_counter() - started
        await asyncio.sleep(0.25)
    raise BenchError(f"the sweep did not prune every finished job within {timeout_s:g} s")


def summary(prefix: str, times_ms: list[float]) -> Figures:
    return {f"{prefix}_p50": percentile(times_ms, 50), f"{prefix}_p99": percentile(times_ms, 99)}

"""The read side: what the HTTP routes show of jobs, their logs and events, the workers and
the service's health. The scheduler owns every change; this only looks, so routes never reach
past either into the store or the pool.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from .db import Store
from .errors import JobNotFound
from .events import Broker
from .jobs import Job, JobState, isoformat
from .logs import LogEntry
from .pool import ProcessPool
from .scheduler import Scheduler
from .streams import ends_stream, event_stream, workflow_event_stream
from .workflows import Workflow


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: list[Job]
    next_cursor: int | None  # where the next page starts; None: this is the last


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool  # able to take and run jobs: a load balancer's 200 or 503
    body: dict[str, Any]


class Reads:
    def __init__(self, db: Store, broker: Broker, pool: ProcessPool, scheduler: Scheduler) -> None:
        self._db = db
        self._broker = broker
        self._pool = pool
        self._scheduler = scheduler

    # -- jobs -----------------------------------------------------------------------------------

    async def job(self, job_id: str) -> Job:
        """Raises JobNotFound."""
        return await self._db.get_job(job_id)

    async def jobs(
        self,
        *,
        states: Sequence[JobState] = (),
        task: str | None = None,
        queue: str | None = None,
        text: str | None = None,
        schedule_id: str | None = None,
        limit: int,
        before: int | None = None,
    ) -> JobPage:
        """A page of jobs, newest first, that match every filter given."""
        jobs, next_cursor = await self._db.list_jobs(
            states=list(states), task=task, queue=queue, text=text, schedule_id=schedule_id,
            limit=limit, before=before,
        )  # fmt: skip
        return JobPage(jobs, next_cursor)

    async def logs(self, job_id: str, *, tail: int | None = None) -> tuple[list[LogEntry], int]:
        """The job's stored log entries and how many older ones were dropped."""
        return await self._db.job_logs(job_id, tail=tail)

    async def finished(self, job: Job, timeout_s: float) -> Job:
        """``job`` as it stands once it has finished, or after ``timeout_s``, whichever is first.

        Woken by the job's own events, never by polling the store; the service stopping ends
        the wait early.
        """
        deadline = time.monotonic() + timeout_s
        while not job.is_terminal and deadline > time.monotonic():
            subscription = self._broker.subscribe(job.id)
            try:
                job = await self._db.get_job(job.id)  # after subscribing: its end cannot slip by
                while not job.is_terminal and (left_s := deadline - time.monotonic()) > 0:
                    event = await subscription.get(left_s)
                    if event is not None:
                        if ends_stream(event):
                            job = await self._db.get_job(job.id)
                    elif subscription.closed:
                        return job
                    elif subscription.overflowed:
                        break  # subscribe again and read the job again
            finally:
                self._broker.unsubscribe(subscription)
        return job

    # -- events ---------------------------------------------------------------------------------

    @property
    def last_event_id(self) -> int:
        """The id of the newest committed event: "now", to a stream."""
        return self._db.last_event_id

    async def has_events_after(self, after_id: int, job_id: str) -> bool:
        return bool(await self._db.events_after(after_id, job_id=job_id, limit=1))

    async def workflow(self, workflow_id: str) -> Workflow:
        """The workflow, its jobs upstream first; WorkflowNotFound."""
        return await self._db.workflow(workflow_id)

    async def workflow_has_events_after(self, workflow_id: str, after_id: int) -> bool:
        return bool(await self._db.workflow_events_after(workflow_id, after_id, limit=1))

    def workflow_stream(
        self, workflow_id: str, *, after_id: int, keepalive_s: float
    ) -> AsyncIterator[bytes]:
        """SSE messages of the workflow's jobs after event ``after_id``, until all are done."""
        return workflow_event_stream(
            self._db, self._broker, workflow_id, after_id=after_id, keepalive_s=keepalive_s
        )

    def stream(
        self, *, after_id: int, job_id: str | None = None, keepalive_s: float
    ) -> AsyncIterator[bytes]:
        """SSE messages after event ``after_id`` (one job's, with ``job_id``)."""
        return event_stream(
            self._db, self._broker, after_id=after_id, job_id=job_id, keepalive_s=keepalive_s
        )

    # -- the service ----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        # both as of the same commit: a client applies the events after event_id to the counts
        return {"event_id": self._db.last_event_id, **self._db.stats.as_json(time.time())}

    async def workers(self) -> dict[str, Any]:
        """Each worker process with the job it runs: this service's, and on a shared store
        every live service's too (as of its last heartbeat), each marked with its service."""
        here = self._pool.status()
        shared = self._db.sharing()
        # each pool with its service's id and where it runs (None with SQLite: one service)
        pools: list[tuple[tuple[str, str] | None, dict[str, Any]]] = [
            (None if shared is None else (shared.instance_id, _here()), here)
        ]
        if shared is not None:
            pools += [
                ((service["id"], f"{service['host']}:{service['pid']}"), service["workers"])
                for service in await shared.instances()
                if service["id"] != shared.instance_id and service["workers"]
            ]
        listed = []
        for service, status in pools:
            for worker in status["workers"]:
                listed.append(await self._worker(service, worker))
        return {
            "size": sum(status["size"] for _, status in pools),
            "busy": sum(status["busy"] for _, status in pools),
            "idle": sum(1 for w in listed if w["state"] == "idle"), "workers": listed,
        }  # fmt: skip

    async def _worker(
        self, service: tuple[str, str] | None, worker: dict[str, Any]
    ) -> dict[str, Any]:
        job = None
        if worker["job_id"] is not None:
            with contextlib.suppress(JobNotFound):  # pruned or never stored
                job = await self._db.get_job(worker["job_id"])
        state = "busy" if worker["job_id"] else "idle" if worker["ready"] else "starting"
        return {
            "pid": worker["pid"], "state": state, "started_at": worker["started_at"],
            "jobs_run": worker["jobs_run"], "service": None if service is None else service[0],
            "service_at": None if service is None else service[1], "job": None if job is None else {
                "id": job.id, "task": job.task, "started_at": isoformat(job.started_at),
                "progress": None if job.progress is None else job.progress.as_dict(),
            },
        }  # fmt: skip

    async def ready(self) -> list[str]:
        """Why the service cannot take and run jobs now; empty when it can. Each check is real:
        a write reaches the database file, a worker process is alive."""
        problems = []
        try:
            await self._db.check_writable()
        except Exception as exc:  # any failure is the answer, not a crash of the check
            problems.append(f"store: {exc}")
        workers = self._pool.status()
        if workers["alive"] == 0:
            start_error = workers["last_start_error"]
            problems.append(f"workers: none alive{f' ({start_error})' if start_error else ''}")
        if self._scheduler.draining:
            problems.append("draining: the service is stopping")
        return problems

    async def health(self, *, public: bool) -> Health:
        """Whether the service can take and run jobs, and why not; ``public`` leaves out job
        ids and tracebacks (the health check needs no token)."""
        try:
            await self._db.ping()
            database: dict[str, Any] = {"ok": True}
        except Exception as exc:  # report, don't crash: this is what health checks are for
            database = {"ok": False, "error": str(exc)}
        workers = self._pool.status()
        if public:
            workers.pop("workers")
            if workers["start_error"] is not None:
                workers["start_error"] = {**workers["start_error"], "traceback": None}
        # workers still starting (or being replaced) are fine; workers that cannot start are not
        broken = workers["alive"] == 0 and workers["last_start_error"] is not None
        draining = self._scheduler.draining
        ok = database["ok"] and not broken and not draining
        body = {
            # 503 while draining too: a load balancer sends new work elsewhere
            "status": "draining" if draining else "ok" if ok else "degraded",
            "database": database,
            "workers": workers,
            "jobs": self._scheduler.status(),
        }
        return Health(ok, body)


def _here() -> str:
    """Where this service runs, as the others list it: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"

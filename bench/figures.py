"""The figures ``python -m bench`` measures, each beside its target.

Every workload starts the service as a user runs it (``bench_core.Service``: hypercorn with the
project's ``hypercorn.toml``, a fresh SQLite file, a free port) and drives it with the lean client
of ``rawhttp``, so that the figures are the service's, not the client's. Each returns its
figures by key; ``TARGETS`` says what each key is held to.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson

from . import bench_backlog, bench_client, fanout, store_scale
from .bench_core import (
    NOOP,
    SERVICE_APP,
    SLEEP,
    BenchError,
    Service,
    cpu_self_s,
    percentile,
    proc_cpu_s,
    proc_status_kb,
)
from .rawhttp import Connection, EventCounter, HTTPError

Figures = dict[str, float]
HELD = 3600  # delay_s of the jobs submitted where none is to run: they stay scheduled


@dataclass(frozen=True)
class Target:
    key: str
    figure: str  # what is measured, as the table shows it
    unit: str
    goal: float
    higher_is_better: bool = True

    def met(self, value: float) -> bool:
        return value >= self.goal if self.higher_is_better else value <= self.goal


TARGETS = [
    Target("e2e_batch", "end to end, no-op jobs, concurrency 2, in batches", "jobs/s", 6500),
    Target("e2e_single", "end to end, no-op jobs, one per request (64 in flight)", "jobs/s", 3000),
    Target("submit_1", "submit one per request, one by one, no job run", "jobs/s", 3000),
    Target("submit_vs_bare", "submit one by one / bare Quart + hypercorn endpoint", "%", 70),
    Target("submit_64", "submit one per request, 64 in flight", "jobs/s", 3000),
    Target("submit_64_vs_1", "submit 64 in flight / one by one", "%", 100),
    Target("batch_1000", "batch submit, 1,000 jobs a request", "jobs/s", 50000),
    Target("result_p50", "submit -> result seen (?wait_s=), idle, p50", "ms", 0.8, False),
    Target("result_p99", "submit -> result seen (?wait_s=), idle, p99", "ms", 2.0, False),
    Target("cancel_p50", "cancel a running job -> answer, p50", "ms", 3.0, False),
    Target("cancel_p99", "cancel a running job -> answer, p99", "ms", 10.0, False),
    Target("fanout_p99", "1,000 SSE subscribers, one event to all, p99", "ms", 50, False),
    Target("fanout_rss", "1,000 SSE subscribers: service memory more", "MiB", 50, False),
    Target("backlog", "a backlog drained (100,000 jobs; quick: 20,000)", "jobs/s", 5000),
    Target("idle_rss", "service memory, idle", "MiB", 60, False),
    Target("stored_rss",
           "memory, 1,000,000 finished jobs stored (quick: 100,000)", "MiB", 120, False),
    Target("page_p99", "GET /jobs page, that many stored, p99", "ms", 20, False),
]  # fmt: skip
# figures shown beside the targets: the stack's own ceiling, and who spent the CPU
CONTEXT = {
    "bare_1": ("bare Quart + hypercorn endpoint, one by one", "req/s"),
    "bare_64": ("bare Quart + hypercorn endpoint, 64 in flight", "req/s"),
    "submit_service_cpu_us": ("service CPU per submit (one by one)", "µs"),
    "submit_client_cpu_us": ("client CPU per submit (one by one)", "µs"),
    "e2e_single_service_cpu_us": ("service CPU per job, end to end, one per request", "µs"),
    "e2e_single_client_cpu_us": ("client CPU per job, end to end, one per request", "µs"),
    "fanout_p50": ("1,000 SSE subscribers, one event to all, p50", "ms"),
    "fanout_max": ("1,000 SSE subscribers, one event to all, the last", "ms"),
    "fanout_service_cpu_us": ("the service's CPU per event delivered", "µs"),
    "fanout_client_cpu_us": ("the readers' CPU per event delivered", "µs"),
    "backlog_service_cpu_us": ("service CPU per job, backlog drained", "µs"),
    "backlog_rss": ("service memory, the backlog queued", "MiB"),
    "page_p50": ("GET /jobs page, that many stored, p50", "ms"),
    "page_failed_p99": ("GET /jobs?state=failed page (1 in 20), p99", "ms"),
    "page_task_p99": ("GET /jobs?task= page (1 in 4), p99", "ms"),
    "submit_stored_p99": ("submit one by one, that many stored, p99", "ms"),
    "submit_pruning_p99": ("submit one by one while the sweep prunes them, p99", "ms"),
    "pruned_per_s": ("retention sweep", "jobs/s"),
    "httpx_sync": ("submit one by one, httpx.Client", "jobs/s"),
    "client_sync": ("submit one by one, Conveyor's Client", "jobs/s"),
    "httpx_async": ("submit one by one, httpx.AsyncClient", "jobs/s"),
    "client_async": ("submit one by one, Conveyor's AsyncClient", "jobs/s"),
    "httpx_sync_cpu_us": ("client CPU per submit, httpx.Client", "µs"),
    "client_sync_cpu_us": ("client CPU per submit, Conveyor's Client", "µs"),
    "httpx_async_cpu_us": ("client CPU per submit, httpx.AsyncClient", "µs"),
    "client_async_cpu_us": ("client CPU per submit, Conveyor's AsyncClient", "µs"),
}


@dataclass(frozen=True)
class Plan:
    jobs: int = 5000  # end to end
    submits: int = 5000  # submit rates
    batches: int = 20  # of 1,000, for the batch rate
    latency_jobs: int = 200
    cancels: int = 50
    stored: int = 1_000_000  # finished jobs in the store
    pages: int = 50  # of each kind of list page
    client_submits: int = 2000  # a side, for each way of submitting
    subscribers: int = 1000  # event streams open, each of them given every event
    fan_events: int = 20  # events fanned out to them, one at a time
    backlog: int = 100_000  # jobs queued, then drained

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            jobs=1000, submits=1000, batches=5, latency_jobs=50, cancels=10, stored=100_000,
            pages=20, client_submits=500, fan_events=5, backlog=20_000,
        )  # fmt: skip


@asynccontextmanager
async def running(
    workdir: Path, *, concurrency: int = 2, app: str = SERVICE_APP, retention_s: float | None = None
) -> AsyncIterator[Service]:
    """A service (or ``app``) started in ``workdir``, stopped at the end."""
    workdir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before the measures
    service = Service(workdir, concurrency, None, app=app)
    if retention_s is not None:
        service.env["CONVEYOR_RETENTION_S"] = str(retention_s)
    service.start()
    spy = None
    try:
        await service.wait_ready(60)
        spy = _flame_graph(service.pid, workdir)
        yield service
    finally:
        service.stop()
        if spy is not None:  # it writes its graph once the service is gone
            spy.wait(timeout=60)


_profiles: Path | None = None  # where each service's flame graph goes (``--profile``), if at all


def profile_into(directory: Path | None) -> None:
    """Have py-spy record a flame graph of every service started from now on, in ``directory``."""
    global _profiles
    _profiles = directory


def _flame_graph(pid: int, workdir: Path) -> subprocess.Popen[bytes] | None:
    if _profiles is None:
        return None
    if shutil.which("py-spy") is None:
        raise BenchError('--profile needs py-spy: pip install -e ".[bench]"')
    graph = _profiles / f"{workdir.parent.name}-{workdir.name}.svg"
    return subprocess.Popen(
        # --nonblocking: sampled without being paused, so the figures stay the service's
        ["py-spy", "record", "--pid", str(pid), "--rate", "250", "--nonblocking",
         "--output", str(graph)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


class CpuSpent:
    """The CPU the service (``pid``) and this client spend from now on."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._service_s, self._client_s = proc_cpu_s(pid) or 0.0, cpu_self_s()

    def per_request_us(self, count: int) -> tuple[float, float]:
        """The service's and the client's µs a request, over ``count`` requests."""
        service_s = (proc_cpu_s(self._pid) or 0.0) - self._service_s
        client_s = cpu_self_s() - self._client_s
        return service_s / count * 1e6, client_s / count * 1e6


Send = Callable[[Connection], Awaitable[None]]  # one request on a connection


def poster(path: str, body: object) -> Send:
    """A ``POST`` of ``body`` (encoded once) to ``path`` that must be answered 200 or 202."""
    payload = orjson.dumps(body)

    async def send(connection: Connection) -> None:
        status, answer = await connection.request("POST", path, payload)
        if status not in (200, 202):
            raise HTTPError(f"POST {path}: {status} {answer[:300]!r}")

    return send


async def spread(count: int, in_flight: int, url: str, send: Send) -> None:
    """``send`` ``count`` times, over ``in_flight`` connections."""
    left = iter(range(count))

    async def one_connection() -> None:
        async with Connection.to(url) as connection:
            for _ in left:  # shared: each connection takes the next request
                await send(connection)

    await asyncio.gather(*(one_connection() for _ in range(min(in_flight, count))))


async def rate(
    count: int, in_flight: int, url: str, send: Send, pid: int
) -> tuple[float, float, float]:
    """Requests a second, and the service's and this client's CPU µs a request."""
    cpu = CpuSpent(pid)
    started = time.perf_counter()
    await spread(count, in_flight, url, send)
    elapsed = time.perf_counter() - started
    return count / elapsed, *cpu.per_request_us(count)


async def submit_rates(workdir: Path, plan: Plan) -> Figures:
    """Submits one per request (one by one, 64 in flight) and in batches of 1,000, none of them
    run, beside a bare Quart endpoint's requests a second in the same run."""
    figures: Figures = {}
    async with running(workdir / "bare", app="bench.bare_app:app") as bare:
        send = poster("/jobs", {"task": NOOP})
        figures["bare_1"] = (await rate(plan.submits, 1, bare.url, send, bare.pid))[0]
        figures["bare_64"] = (await rate(plan.submits, 64, bare.url, send, bare.pid))[0]
    async with running(workdir / "submits", concurrency=1) as service:
        held = {"task": NOOP, "delay_s": HELD}
        send = poster("/jobs", held)
        one, service_us, client_us = await rate(plan.submits, 1, service.url, send, service.pid)
        figures["submit_1"] = one
        figures["submit_service_cpu_us"] = service_us
        figures["submit_client_cpu_us"] = client_us
        figures["submit_64"] = (await rate(plan.submits, 64, service.url, send, service.pid))[0]
        send_batch = poster("/jobs/batch", {"jobs": [held] * 1000})
        batches = (await rate(plan.batches, 1, service.url, send_batch, service.pid))[0]
        figures["batch_1000"] = batches * 1000
    figures["submit_vs_bare"] = 100 * figures["submit_1"] / figures["bare_1"]
    figures["submit_64_vs_1"] = 100 * figures["submit_64"] / figures["submit_1"]
    return figures


async def end_to_end(workdir: Path, plan: Plan) -> Figures:
    """No-op jobs submitted over HTTP and run by two workers, from the first submit to the
    last ``succeeded`` seen on ``/events``: one per request (64 in flight), then in batches."""
    figures: Figures = {}
    async with running(workdir / "e2e-single") as service, EventCounter(service.url) as events:
        cpu = CpuSpent(service.pid)
        started = time.perf_counter()
        await spread(plan.jobs, 64, service.url, poster("/jobs", {"task": NOOP}))
        await events.until(plan.jobs)
        figures["e2e_single"] = plan.jobs / (time.perf_counter() - started)
        service_us, client_us = cpu.per_request_us(plan.jobs)
        figures["e2e_single_service_cpu_us"] = service_us
        figures["e2e_single_client_cpu_us"] = client_us
    async with running(workdir / "e2e-batch") as service, EventCounter(service.url) as events:
        per_batch = 500
        jobs = plan.jobs // per_batch * per_batch
        send = poster("/jobs/batch", {"jobs": [{"task": NOOP}] * per_batch})
        started = time.perf_counter()
        await spread(jobs // per_batch, 2, service.url, send)
        await events.until(jobs)
        figures["e2e_batch"] = jobs / (time.perf_counter() - started)
    return figures


async def latencies(workdir: Path, plan: Plan) -> Figures:
    """On an idle service: a no-op job's result seen by the client (``POST /jobs?wait_s=``, one
    round trip), one job after another; then running jobs canceled, request to answer."""
    figures: Figures = {}
    async with running(workdir / "latency") as service:
        await asyncio.sleep(1)  # started, settled: memory at rest
        figures["idle_rss"] = (proc_status_kb(service.pid, "VmRSS") or 0) / 1024
        async with Connection.to(service.url) as connection:
            results_ms: list[float] = []
            for _ in range(plan.latency_jobs):
                started = time.perf_counter()
                job = await connection.json(
                    "POST", "/jobs?wait_s=10", {"task": NOOP}, expect=(200, 202)
                )
                results_ms.append((time.perf_counter() - started) * 1000)
                if not isinstance(job, dict) or job.get("state") != "succeeded":
                    raise BenchError(f"a no-op job did not succeed within its wait: {job!r}")
            figures["result_p50"] = percentile(results_ms, 50)
            figures["result_p99"] = percentile(results_ms, 99)
            cancels_ms: list[float] = []
            for _ in range(plan.cancels):
                job = await connection.json(
                    "POST", "/jobs", {"task": SLEEP, "args": [30]}, expect=(200, 202)
                )
                assert isinstance(job, dict)
                await _until_running(connection, job["id"])
                started = time.perf_counter()
                answer = await connection.json("POST", f"/jobs/{job['id']}/cancel")
                cancels_ms.append((time.perf_counter() - started) * 1000)
                if not isinstance(answer, dict) or answer.get("state") != "canceled":
                    raise BenchError(f"a cancel did not answer canceled: {answer!r}")
            figures["cancel_p50"] = percentile(cancels_ms, 50)
            figures["cancel_p99"] = percentile(cancels_ms, 99)
    return figures


async def _until_running(connection: Connection, job_id: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = await connection.json("GET", f"/jobs/{job_id}")
        if isinstance(job, dict) and job.get("state") == "running":
            return
        await asyncio.sleep(0.002)
    raise BenchError(f"job {job_id} did not start within {timeout_s:g} s")


async def clients(workdir: Path, plan: Plan) -> Figures:
    """Submits one by one as users make them: plain httpx (sync and async, as the README shows)
    and Conveyor's own client, taking turns in blocks on one service; requests a second and
    the client's CPU a request (the lean client's are ``submit_1``'s)."""
    figures: Figures = {}
    async with running(workdir / "clients") as service:
        turns = bench_client.Plan(
            service.pid, plan.client_submits, rounds=1, block=100, deadline=time.monotonic() + 600
        )
        sync_sides = await asyncio.to_thread(bench_client.bench_sync, service.url, turns)
        async_sides = await bench_client.bench_async(service.url, turns)
    for key, side in zip(CLIENT_KEYS, (*sync_sides, *async_sides), strict=True):
        figures[key] = 1e6 / side.wall_us
        figures[f"{key}_cpu_us"] = side.cpu_us
    return figures


async def backlog(workdir: Path, plan: Plan) -> Figures:
    """A backlog of ``plan.backlog`` no-op jobs of mixed priorities, queued behind two busy
    workers, then released (``bench/bench_backlog.py``): jobs/s drained, memory meanwhile."""
    options = argparse.Namespace(jobs=plan.backlog, concurrency=2, timeout=900)
    workdir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before the measures
    result = await bench_backlog.bench_service(options, workdir)
    return {
        "backlog": plan.backlog / result["drain_s"],
        "backlog_service_cpu_us": result["cpu_s"] / plan.backlog * 1e6,
        "backlog_rss": (result["rss_backlog_kb"] or 0) / 1024,
    }


CLIENT_KEYS = ("httpx_sync", "client_sync", "httpx_async", "client_async")
PRUNE_SUBMITS_S = 8.0  # how long submits are timed while the sweep prunes


async def stored_jobs(workdir: Path, plan: Plan) -> Figures:
    """Memory and list pages (newest first, by a rare state, by task) with ``plan.stored``
    finished jobs in the store; then submits timed while the retention sweep prunes them all."""
    # finished over the hour before the last: kept by the default retention (7 days), all
    # past the minute of the second service below
    an_hour_ago = time.time() - 3600
    await store_scale.seed_once(workdir / "stored" / "conveyor.db", plan.stored, an_hour_ago)
    figures: Figures = {}
    pages = {
        "page": "/jobs", "page_failed": "/jobs?state=failed", "page_task": "/jobs?task=mail.send",
    }  # fmt: skip
    async with running(workdir / "stored") as service:
        async with Connection.to(service.url) as connection:
            for key, path in pages.items():
                times_ms = await store_scale.page_times_ms(connection, path, plan.pages)
                figures.update(store_scale.summary(key, times_ms))
            times_ms = await store_scale.submit_times_ms(connection, 3)
            figures.update(store_scale.summary("submit_stored", times_ms))
        figures["stored_rss"] = (proc_status_kb(service.pid, "VmRSS") or 0) / 1024
    # the same store, kept for a minute: every finished job is past it at once
    async with (
        running(workdir / "stored", retention_s=60) as service,
        Connection.to(service.url) as connection,
    ):
        started = time.perf_counter()
        times_ms = await store_scale.submit_times_ms(connection, PRUNE_SUBMITS_S)
        figures.update(store_scale.summary("submit_pruning", times_ms))
        if await store_scale.finished_jobs(connection) == 0:
            raise BenchError("the sweep ended before the submits did: nothing was measured")
        await store_scale.until_pruned(connection, timeout_s=600)
        figures["pruned_per_s"] = plan.stored / (time.perf_counter() - started)
    return figures


WORKLOADS: list[tuple[str, Callable[[Path, Plan], Awaitable[Figures]]]] = [
    ("submit rates", submit_rates),
    ("end to end", end_to_end),
    ("latencies", latencies),
    ("stored jobs", stored_jobs),
    ("clients", clients),
    ("fan-out", fanout.fan_out),
    ("backlog", backlog),
]

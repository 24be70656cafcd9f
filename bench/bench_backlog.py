"""Benchmark dispatch from a large backlog with mixed priorities.

1. In the service as a user runs it (``hypercorn --config hypercorn.toml ...``, a fresh SQLite
   file): every worker is held by a blocker job, a backlog of N no-op jobs with priorities drawn
   from a few levels is submitted with ``POST /jobs/batch``, the service's memory is read with the
   whole backlog queued, then the blockers are canceled and the time until the backlog has run
   gives the dispatch rate; the start times of the jobs check that higher priorities went first.
2. The ready queue alone (``service.ready.ReadyQueue``), in this process: N puts and N takes with
   the same priorities, and the memory it holds with the backlog in it.

Run it from the repository root::

    python bench/bench_backlog.py [--jobs 100000] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_core import (
    SLEEP,
    BenchError,
    Service,
    machine,
    mib,
    parse_iso,
    proc_cpu_s,
    proc_status_kb,
    within,
    workdir,
)
from service.ready import ReadyQueue

NOOP = "service.demo.noop"
PRIORITIES = (-5, 0, 0, 0, 1, 5, 10)  # mostly the default, some above and below
BATCH = 1000


async def post_batch(client: httpx.AsyncClient, jobs: list[dict[str, Any]]) -> list[str]:
    response = await client.post("/jobs/batch", json={"jobs": jobs})
    if response.status_code != 202:
        raise BenchError(f"POST /jobs/batch answered {response.status_code}: {response.text}")
    return [job["id"] for job in response.json()["jobs"]]


async def counts(client: httpx.AsyncClient) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get("/health")).json()["jobs"]
    return body


async def until_empty(client: httpx.AsyncClient) -> None:
    while True:
        jobs = await counts(client)
        if jobs["queued"] == 0 and jobs["running"] == 0:
            return
        await asyncio.sleep(0.05)


async def sample_order(
    client: httpx.AsyncClient, ids_by_priority: dict[int, list[str]], per_level: int = 50
) -> dict[int, float]:
    """The median start time of a sample of each priority's jobs, relative to the earliest."""
    medians: dict[int, float] = {}
    for priority, ids in ids_by_priority.items():
        starts = []
        for job_id in random.sample(ids, min(per_level, len(ids))):
            job = (await client.get(f"/jobs/{job_id}")).json()
            starts.append(parse_iso(job["started_at"]))
        medians[priority] = sorted(starts)[len(starts) // 2]
    first = min(medians.values())
    return {priority: medians[priority] - first for priority in sorted(medians, reverse=True)}


async def bench_service(options: argparse.Namespace, path: Path) -> dict[str, Any]:
    service = Service(path, options.concurrency, cancel_grace_s=0.2)
    service.start()
    try:
        await service.wait_ready(30)
        async with httpx.AsyncClient(base_url=service.url, timeout=120) as client:
            blockers = []
            for _ in range(options.concurrency):
                response = await client.post(
                    "/jobs", json={"task": SLEEP, "args": [3600, 1], "priority": 1_000}
                )
                blockers.append(response.json()["id"])
            await within(30, "the blockers to start", _running(client, options.concurrency))
            rng = random.Random(7)
            ids_by_priority: dict[int, list[str]] = {p: [] for p in set(PRIORITIES)}
            submit_start = time.perf_counter()
            for offset in range(0, options.jobs, BATCH):
                levels = [rng.choice(PRIORITIES) for _ in range(min(BATCH, options.jobs - offset))]
                ids = await post_batch(client, [{"task": NOOP, "priority": p} for p in levels])
                for priority, job_id in zip(levels, ids, strict=True):
                    ids_by_priority[priority].append(job_id)
            submit_s = time.perf_counter() - submit_start
            queued = (await counts(client))["queued"]
            if queued != options.jobs:
                raise BenchError(f"expected {options.jobs} queued, /health says {queued}")
            rss_backlog_kb = proc_status_kb(service.pid, "VmRSS")
            cpu_before = proc_cpu_s(service.pid) or 0.0
            drain_start = time.perf_counter()
            for job_id in blockers:
                await client.post(f"/jobs/{job_id}/cancel")
            await within(options.timeout, "the backlog to run", until_empty(client))
            drain_s = time.perf_counter() - drain_start
            cpu_s = (proc_cpu_s(service.pid) or 0.0) - cpu_before
            order = await sample_order(client, ids_by_priority)
            return {
                "submit_s": submit_s,
                "drain_s": drain_s,
                "cpu_s": cpu_s,
                "rss_backlog_kb": rss_backlog_kb,
                "hwm_kb": proc_status_kb(service.pid, "VmHWM"),
                "order": order,
            }
    except BaseException:
        print(f"--- the service log ends with ---\n{service.log_tail()}", file=sys.stderr)
        raise
    finally:
        service.stop()


async def _running(client: httpx.AsyncClient, count: int) -> None:
    while (await counts(client))["running"] < count:
        await asyncio.sleep(0.05)


def bench_ready_queue(jobs: int) -> dict[str, float]:
    rng = random.Random(7)
    levels = [rng.choice(PRIORITIES) for _ in range(jobs)]
    ids = [f"{index:08x}-0000-4000-8000-000000000000" for index in range(jobs)]  # uuid-sized
    tracemalloc.start()
    ready = ReadyQueue({"default": 4}, {})
    start = time.perf_counter()
    for job_id, priority in zip(ids, levels, strict=True):
        ready.put(job_id, NOOP, "default", priority)
    put_s = time.perf_counter() - start
    held_bytes, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    start = time.perf_counter()
    last_level = max(PRIORITIES)
    for _ in range(jobs):
        entry = ready.take()
        if entry is None:
            raise BenchError("the ready queue ran dry early")
        ready.release(entry)
        level = levels[int(entry.job_id[:8], 16)]
        if level > last_level:
            raise BenchError("a lower priority came out before a higher one")
        last_level = level
    take_s = time.perf_counter() - start
    return {"put_us": put_s / jobs * 1e6, "take_us": take_s / jobs * 1e6, "bytes": held_bytes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs in the backlog")
    parser.add_argument("--concurrency", type=int, default=2, help="CONVEYOR_CONCURRENCY")
    parser.add_argument("--timeout", type=float, default=900, help="seconds for the drain")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    options = parser.parse_args(argv)
    host = machine()
    print(f"{host['nproc']} CPU(s), {host['cpu']}, {host['python']}")
    ready = bench_ready_queue(options.jobs)
    print(
        f"ready queue alone, {options.jobs:,} jobs over {len(set(PRIORITIES))} priorities: "
        f"put {ready['put_us']:.2f} us, take+release {ready['take_us']:.2f} us per job; "
        f"{ready['bytes'] / options.jobs:.0f} bytes per queued job "
        f"({ready['bytes'] / 2**20:.1f} MiB)"
    )
    try:
        with workdir(options.keep) as path:
            result = asyncio.run(bench_service(options, path))
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    rate = options.jobs / result["drain_s"]
    print(
        f"service, {options.jobs:,} no-op jobs queued behind {options.concurrency} busy "
        f"worker(s): submitted in {result['submit_s']:.1f} s (batches of {BATCH}); "
        f"RSS with the backlog queued {mib(result['rss_backlog_kb'])}, peak {mib(result['hwm_kb'])}"
    )
    print(
        f"  drained in {result['drain_s']:.1f} s = {rate:,.0f} jobs/s; service CPU "
        f"{result['cpu_s'] / options.jobs * 1e6:.0f} us per job (dispatch, run, record, events)"
    )
    order = ", ".join(f"{p:+d}: {t:.1f} s" for p, t in result["order"].items())
    print(f"  median start after the first, by priority: {order}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

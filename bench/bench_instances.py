"""Several services on one PostgreSQL: throughput with 1, 2 and 4 of them, and a cancel sent to
one service for a job running on another.

1. A throwaway PostgreSQL server (``bench/pgcluster.py``; Debian's ``postgresql`` package).
2. For each count N: N services as a user runs them (``hypercorn --config hypercorn.toml``,
   ``CONVEYOR_DATABASE`` the server's one database, emptied first), each with ``--concurrency``
   workers. ``--jobs`` no-op jobs are submitted with ``POST /jobs/batch``, the batches spread
   over the services in turn; the time from the first submit until the database holds every
   job succeeded gives jobs/s, and N services are set beside N times one service's rate.
3. Two services: a job that sleeps runs on one, ``POST /jobs/<id>/cancel`` goes to the other;
   the time to its answer (the job canceled, its process gone), ``--cancels`` times.

Run it from the repository root::

    python bench/bench_instances.py [--jobs 5000] [--counts 1 2 4] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_core import BenchError, Service, bench_main, percentile, within
from bench.pgcluster import Cluster, cluster

NOOP = "service.demo.noop"
SLEEP = "service.demo.sleep"
BATCH = 500
POLL_S = 0.02  # how often the database is asked how many jobs have succeeded


@dataclass
class Results:
    rates: dict[int, float] = field(default_factory=dict)  # services -> jobs/s
    cancels_ms: list[float] = field(default_factory=list)


def start_services(db: Cluster, count: int, concurrency: int, workdir: Path) -> list[Service]:
    url = db.database()
    services = []
    for n in range(count):
        path = workdir / f"service-{count}-{n}"
        path.mkdir(parents=True)
        service = Service(path, concurrency, cancel_grace_s=None)
        service.env["CONVEYOR_DATABASE"] = url
        service.start()
        services.append(service)
    return services


def stop_all(services: list[Service]) -> None:
    for service in services:
        service.stop()


async def throughput(services: list[Service], url: str, jobs: int) -> float:
    await asyncio.gather(*(service.wait_ready(30) for service in services))
    clients = [httpx.AsyncClient(base_url=s.url, timeout=30) for s in services]
    try:
        batches = [min(BATCH, jobs - start) for start in range(0, jobs, BATCH)]
        started = time.perf_counter()

        async def submit(client: httpx.AsyncClient, size: int) -> None:
            body = {"jobs": [{"task": NOOP} for _ in range(size)]}
            response = await client.post("/jobs/batch", json=body)
            if response.status_code != 202:
                raise BenchError(f"POST /jobs/batch: {response.status_code} {response.text}")

        await asyncio.gather(
            *(submit(c, size) for c, size in zip(itertools.cycle(clients), batches, strict=False))
        )
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            while True:
                cursor = await conn.execute("SELECT count(*) FROM jobs WHERE state = 'succeeded'")
                row = await cursor.fetchone()
                if row is not None and row[0] >= jobs:
                    break
                if time.perf_counter() - started > 300:
                    raise BenchError(f"only {row} of {jobs} jobs succeeded after 300 s")
                await asyncio.sleep(POLL_S)
        return jobs / (time.perf_counter() - started)
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))


async def cancels(services: list[Service], count: int) -> list[float]:
    await asyncio.gather(*(service.wait_ready(30) for service in services))
    a, b = services
    timings: list[float] = []
    async with (
        httpx.AsyncClient(base_url=a.url, timeout=30) as on_a,
        httpx.AsyncClient(base_url=b.url, timeout=30) as on_b,
    ):
        for _ in range(count):
            job_id = (await on_a.post("/jobs", json={"task": SLEEP, "args": [60]})).json()["id"]
            runner = await within(10, "the sleep to run", _runner(on_a, on_b, job_id))
            other = on_b if runner is on_a else on_a
            started = time.perf_counter()
            answer = await other.post(f"/jobs/{job_id}/cancel")
            timings.append((time.perf_counter() - started) * 1000)
            if answer.status_code != 200 or answer.json()["state"] != "canceled":
                raise BenchError(f"cancel across: {answer.status_code} {answer.text}")
    return timings


async def _runner(
    on_a: httpx.AsyncClient, on_b: httpx.AsyncClient, job_id: str
) -> httpx.AsyncClient:
    """The client of the service whose worker runs ``job_id``, once one does."""
    while True:
        for client in (on_a, on_b):
            workers = (await client.get("/health")).json()["workers"]["workers"]
            if any(worker["job_id"] == job_id for worker in workers):
                return client
        await asyncio.sleep(POLL_S)


def measure(options: argparse.Namespace, workdir: Path) -> Results:
    results = Results()
    with cluster() as db:
        for count in options.counts:
            services = start_services(db, count, options.concurrency, workdir)
            try:
                url = services[0].env["CONVEYOR_DATABASE"]
                results.rates[count] = asyncio.run(throughput(services, url, options.jobs))
            finally:
                stop_all(services)
        services = start_services(db, 2, 1, workdir / "cancel")
        try:
            results.cancels_ms = asyncio.run(cancels(services, options.cancels))
        finally:
            stop_all(services)
    return results


def report(results: Results, options: argparse.Namespace, host: dict[str, str]) -> None:
    print(f"machine: {host}")
    print(
        f"services on one PostgreSQL, {options.concurrency} workers each; "
        f"{options.jobs} no-op jobs in batches of {BATCH}, spread over the services"
    )
    one = results.rates.get(1)
    print("| services | jobs/s | vs N x one service |")
    print("| ---: | ---: | ---: |")
    for count, rate in results.rates.items():
        ratio = "" if one is None else f"{rate / (count * one):.2f}"
        print(f"| {count} | {rate:,.0f} | {ratio} |")
    timings = results.cancels_ms
    if timings:
        print(
            f"cancel sent to one service, job on another: p50 {statistics.median(timings):.1f} ms, "
            f"p99 {percentile(timings, 99):.1f} ms, max {max(timings):.1f} ms "
            f"({len(timings)} cancels)"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--concurrency", type=int, default=2, help="workers of each service")
    parser.add_argument("--cancels", type=int, default=50)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    return bench_main(options, lambda path: measure(options, path), report)


if __name__ == "__main__":
    sys.exit(main())

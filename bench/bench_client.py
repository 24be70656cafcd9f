"""Benchmark the Python client (``service.client``) against raw httpx on the same service.

Starts the service as ``bench_core`` does (``hypercorn --config hypercorn.toml``, a fresh SQLite
file, concurrency 2, on a free port of 127.0.0.1), then measures, as medians of ``--rounds``
rounds of ``--jobs`` ``service.demo.noop`` submits a side, made one after another on one
keep-alive connection a side (the two sides take turns in blocks of ``--block`` submits, so that
a slow stretch of the service does not fall on one side only):

1. raw ``httpx.Client.post("/jobs", json=...)`` + ``response.json()``: µs per submit;
2. ``service.client.Client.submit(NOOP)``: µs per submit, and its overhead over (1), which is
   negative where the client is the faster: it sends plain HTTP over keep-alive connections of
   its own (``service/client/transport.py``, ``aio_transport.py``), where (1) goes through
   httpcore;
3. the same pair async: ``httpx.AsyncClient`` against ``service.client.AsyncClient``;
4. the CPU this process spends per submit (``time.process_time``) on each side, which isolates
   the client's own cost from the service's (whose CPU per submit is shown beside it);
5. submit → result latency of ``--latency-jobs`` sequential no-op jobs: ``JobHandle.result()``
   (one ``GET /jobs/<id>?wait_s=`` long poll) against raw baselines that poll
   ``GET /jobs/<id>`` every 1 ms, or read the job's stream with httpx-sse, then GET the job.

The no-op jobs of the submit rounds run as they come (2 workers drain them), so the queue stays
short. ``--profile N`` adds a cProfile of N ``Client.submit`` calls, by own time.

Run it from the repository root (about 2 minutes with the defaults, most of it the service's
own ~4 ms a sequential submit)::

    python bench/bench_client.py [--jobs 2000] [--rounds 3] [--latency-jobs 200] [--profile N]

It exits non-zero with a message when anything fails; the service is stopped in every case.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import connect_sse

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_core import (
    NOOP,
    TERMINAL,
    BenchError,
    Latencies,
    Service,
    bench_main,
    proc_cpu_s,
    stop_and_report,
)
from service.client import AsyncClient, Client

# What Client.submit(NOOP) sends (TaskCall.body with no options), so both sides send the same.
BODY: dict[str, Any] = {"task": NOOP, "args": [], "kwargs": {}}
WARMUP = 100  # submits per side before the rounds: connections, first-call paths
RESULT_TIMEOUT_S = 30.0
POLL_S = 0.001


# -- the measurements -------------------------------------------------------------------------


@dataclass
class Round:
    """One round of ``jobs`` submits: wall time, this process's CPU, the service's CPU."""

    jobs: int
    wall_s: float
    cpu_s: float
    server_cpu_s: float | None

    @property
    def wall_us(self) -> float:
        return self.wall_s / self.jobs * 1e6

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.jobs * 1e6

    @property
    def server_us(self) -> float | None:
        return None if self.server_cpu_s is None else self.server_cpu_s / self.jobs * 1e6


@dataclass
class Side:
    """The rounds of one way of submitting, summarised as medians."""

    name: str
    rounds: list[Round]

    @property
    def wall_us(self) -> float:
        return statistics.median(r.wall_us for r in self.rounds)

    @property
    def cpu_us(self) -> float:
        return statistics.median(r.cpu_us for r in self.rounds)

    @property
    def server_us(self) -> float | None:
        values = [v for v in (r.server_us for r in self.rounds) if v is not None]
        return statistics.median(values) if values else None

    def spread(self) -> str:
        return ", ".join(f"{r.wall_us:.0f}" for r in self.rounds)


class Meter:
    """Wall, process and service CPU over a stretch of code."""

    def __init__(self, service_pid: int, jobs: int) -> None:
        self.pid = service_pid
        self.jobs = jobs

    def __enter__(self) -> Meter:
        self.server0 = proc_cpu_s(self.pid)
        self.cpu0 = time.process_time()
        self.wall0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall1 = time.perf_counter()
        cpu1 = time.process_time()
        server1 = proc_cpu_s(self.pid)
        server = None if self.server0 is None or server1 is None else server1 - self.server0
        self.round = Round(self.jobs, wall1 - self.wall0, cpu1 - self.cpu0, server)


def check_submitted(response: httpx.Response) -> dict[str, Any]:
    if response.status_code != 202:
        raise BenchError(f"POST /jobs answered {response.status_code}: {response.text[:300]}")
    job: dict[str, Any] = response.json()
    return job


def raw_submits(http: httpx.Client, jobs: int) -> None:
    for _ in range(jobs):
        check_submitted(http.post("/jobs", json=BODY))


def client_submits(client: Client, jobs: int) -> None:
    for _ in range(jobs):
        client.submit(NOOP)


async def araw_submits(http: httpx.AsyncClient, jobs: int) -> None:
    for _ in range(jobs):
        check_submitted(await http.post("/jobs", json=BODY))


async def aclient_submits(client: AsyncClient, jobs: int) -> None:
    for _ in range(jobs):
        await client.submit(NOOP)


def total(rounds: list[Round]) -> Round:
    """The blocks of one round as one."""
    servers = [r.server_cpu_s for r in rounds]
    return Round(
        sum(r.jobs for r in rounds),
        sum(r.wall_s for r in rounds),
        sum(r.cpu_s for r in rounds),
        None if None in servers else sum(s for s in servers if s is not None),
    )


def schedule(jobs: int, block: int) -> list[tuple[str, int]]:
    """One round: each side's ``jobs`` submits in blocks of ``block``, the sides taking turns
    (A B, B A, A B, ...) so that neither is favoured by where the service's load drifts."""
    order: list[tuple[str, int]] = []
    for n, first in enumerate(range(0, jobs, block)):
        size = min(block, jobs - first)
        sides = ("raw", "client") if n % 2 == 0 else ("client", "raw")
        order.extend((side, size) for side in sides)
    return order


@dataclass
class Plan:
    service_pid: int
    jobs: int
    rounds: int
    block: int
    deadline: float  # time.monotonic()

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise BenchError("the measurements ran past --timeout")


def bench_sync(url: str, plan: Plan) -> tuple[Side, Side]:
    sides = {"raw": Side("httpx.Client", []), "client": Side("Client.submit", [])}
    with httpx.Client(base_url=url, timeout=30) as http, Client(url, timeout_s=30) as client:
        runs: dict[str, Callable[[int], None]] = {
            "raw": lambda n: raw_submits(http, n),
            "client": lambda n: client_submits(client, n),
        }
        for run in runs.values():
            run(WARMUP)
        for _ in range(plan.rounds):
            blocks: dict[str, list[Round]] = {name: [] for name in sides}
            for name, size in schedule(plan.jobs, plan.block):
                with Meter(plan.service_pid, size) as meter:
                    runs[name](size)
                blocks[name].append(meter.round)
                plan.check()
            for name, side in sides.items():
                side.rounds.append(total(blocks[name]))
    return sides["raw"], sides["client"]


async def bench_async(url: str, plan: Plan) -> tuple[Side, Side]:
    sides = {"raw": Side("httpx.AsyncClient", []), "client": Side("AsyncClient.submit", [])}
    async with (
        httpx.AsyncClient(base_url=url, timeout=30) as http,
        AsyncClient(url, timeout_s=30) as client,
    ):
        runs: dict[str, Callable[[int], Awaitable[None]]] = {
            "raw": lambda n: araw_submits(http, n),
            "client": lambda n: aclient_submits(client, n),
        }
        for run in runs.values():
            await run(WARMUP)
        for _ in range(plan.rounds):
            blocks: dict[str, list[Round]] = {name: [] for name in sides}
            for name, size in schedule(plan.jobs, plan.block):
                with Meter(plan.service_pid, size) as meter:
                    await runs[name](size)
                blocks[name].append(meter.round)
                plan.check()
            for name, side in sides.items():
                side.rounds.append(total(blocks[name]))
    return sides["raw"], sides["client"]


# -- submit → result --------------------------------------------------------------------------


def finished(job: dict[str, Any]) -> dict[str, Any]:
    if job.get("state") != "succeeded":
        raise BenchError(f"job {job.get('id')} is {job.get('state')}, expected succeeded")
    return job


def get_job(http: httpx.Client, job_id: str) -> dict[str, Any]:
    response = http.get(f"/jobs/{job_id}")
    if response.status_code != 200:
        raise BenchError(f"GET /jobs/{job_id} answered {response.status_code}")
    job: dict[str, Any] = response.json()
    return job


def result_by_client(client: Client, http: httpx.Client) -> None:
    handle = client.submit(NOOP)
    handle.result(timeout_s=RESULT_TIMEOUT_S)  # None: the no-op's result; raises if it failed


def result_by_polling(client: Client, http: httpx.Client) -> None:
    job_id = check_submitted(http.post("/jobs", json=BODY))["id"]
    deadline = time.monotonic() + RESULT_TIMEOUT_S
    while True:
        job = get_job(http, job_id)
        if job["state"] in TERMINAL:
            finished(job)
            return
        if time.monotonic() > deadline:
            raise BenchError(f"job {job_id} not finished after {RESULT_TIMEOUT_S:g} s")
        time.sleep(POLL_S)


def result_by_stream(client: Client, http: httpx.Client) -> None:
    """What ``result()`` did before its long poll, in plain httpx-sse: the job's stream to its
    end, then the job."""
    job_id = check_submitted(http.post("/jobs", json=BODY))["id"]
    ended = False
    timeout = httpx.Timeout(RESULT_TIMEOUT_S)
    with connect_sse(http, "GET", f"/jobs/{job_id}/events", timeout=timeout) as source:
        status = source.response.status_code
        if status == 200:
            for sse in source.iter_sse():
                if sse.event == "state" and json.loads(sse.data)["state"] in TERMINAL:
                    ended = True  # read on: the service ends the stream after it
        elif status != 204:  # 204: finished before the stream was asked for
            raise BenchError(f"GET /jobs/{job_id}/events answered {status}")
    if status == 200 and not ended:
        raise BenchError(f"the stream of {job_id} ended without a terminal state")
    finished(get_job(http, job_id))


WAYS: dict[str, Callable[[Client, httpx.Client], None]] = {
    "JobHandle.result()": result_by_client,
    "raw: poll GET every 1 ms": result_by_polling,
    "raw: httpx-sse stream + GET": result_by_stream,
}


def bench_results(url: str, jobs: int, plan: Plan) -> dict[str, Latencies]:
    """Each way ``jobs`` times, one job at a time, the ways taking turns (rotated order)."""
    names = list(WAYS)
    times: dict[str, list[float]] = {name: [] for name in names}
    with httpx.Client(base_url=url, timeout=30) as http, Client(url, timeout_s=30) as client:
        for name in names:  # warm up
            WAYS[name](client, http)
        for n in range(jobs):
            for name in names[n % len(names) :] + names[: n % len(names)]:
                start = time.perf_counter()
                WAYS[name](client, http)
                times[name].append((time.perf_counter() - start) * 1000)
            plan.check()
    return {name: Latencies(values) for name, values in times.items()}


def profile_client(url: str, jobs: int) -> str:
    """The top of a cProfile of ``jobs`` ``Client.submit`` calls, by own time."""
    with Client(url, timeout_s=30) as client:
        client_submits(client, WARMUP)
        profiler = cProfile.Profile()
        profiler.runcall(client_submits, client, jobs)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(20)
    stats.sort_stats("cumulative").print_stats(r"service/client|httpx/_client|json", 25)
    return out.getvalue()


# -- the report -------------------------------------------------------------------------------


@dataclass
class Results:
    sync: tuple[Side, Side]
    aio: tuple[Side, Side]
    latency: dict[str, Latencies]
    profile: str | None
    load: tuple[float, float]  # 1-minute load average before and after


def overhead(raw: float, ours: float) -> str:
    return f"{ours - raw:+,.0f} µs ({(ours - raw) / raw:+.0%})"


def row(measure: str, *cells: str) -> None:
    """A row of the markdown table: measure, raw httpx, the client, overhead (blank if none)."""
    padded = [*cells, *[""] * (3 - len(cells))]
    print("|" + "|".join(f" {cell} " if cell else " " for cell in [measure, *padded]) + "|")


def us(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} µs"


def report(results: Results, options: argparse.Namespace, host: dict[str, str]) -> None:
    print()
    print("== Conveyor client benchmark ==")
    print(f"machine:  nproc={host['nproc']}, {host['cpu']}, {host['python']}, {host['os']}")
    print(
        f"load:     1-minute load average {results.load[0]:.2f} before, {results.load[1]:.2f} after"
        " (other work on the machine shows in the wall times more than in the CPU times)"
    )
    print(
        f"service:  hypercorn (hypercorn.toml), CONVEYOR_CONCURRENCY={options.concurrency}, "
        "SQLite in a temp dir, client on the same machine"
    )
    print(
        f"submits:  {options.jobs} x {NOOP} a round, sequential on one keep-alive connection, "
        f"median of {options.rounds} rounds"
    )
    print()
    for raw, ours in (results.sync, results.aio):
        for side in (raw, ours):
            print(
                f"  {side.name:20} wall {side.wall_us:7.0f} µs/submit (rounds: {side.spread()}); "
                f"CPU here {side.cpu_us:5.0f} µs, service {us(side.server_us)}"
            )
    print()
    for name, lat in results.latency.items():
        print(f"  submit -> result, {name:28} {lat.line()}")
    print()
    print("| measure | raw httpx | `service.client` | overhead |")
    print("| --- | --- | --- | --- |")
    for label, (raw, ours) in (("sync", results.sync), ("async", results.aio)):
        row(
            f"submit, {label} (wall per submit, {options.jobs:,} sequential)",
            us(raw.wall_us), us(ours.wall_us), overhead(raw.wall_us, ours.wall_us),
        )  # fmt: skip
    for label, (raw, ours) in (("sync", results.sync), ("async", results.aio)):
        row(
            f"CPU of this process per submit, {label}",
            us(raw.cpu_us), us(ours.cpu_us), overhead(raw.cpu_us, ours.cpu_us),
        )  # fmt: skip
    for label, (raw, ours) in (("sync", results.sync), ("async", results.aio)):
        row(
            f"CPU of the service process per submit, {label}", us(raw.server_us), us(ours.server_us)
        )
    mine = results.latency["JobHandle.result()"]
    for name in ("raw: poll GET every 1 ms", "raw: httpx-sse stream + GET"):
        base = results.latency[name]
        row(
            f"submit → result, p50 / p99 ({len(mine.values)} sequential; {name.split(': ')[1]})",
            f"{base.p50:.2f} / {base.p99:.2f} ms", f"{mine.p50:.2f} / {mine.p99:.2f} ms",
            f"{mine.p50 - base.p50:+.2f} ms at p50",
        )  # fmt: skip
    row("Machine", f"{host['nproc']} CPUs ({host['cpu']}), {host['python']}")
    if results.profile is not None:
        print()
        print(f"cProfile of {options.profile} Client.submit calls:")
        print(results.profile)


# -- main -------------------------------------------------------------------------------------


def run(options: argparse.Namespace, path: Path) -> Results:
    service = Service(path, options.concurrency, None)
    try:
        service.start()
        print(f"service pid {service.pid} on {service.url}; log {service.log}", flush=True)
        asyncio.run(service.wait_ready(options.startup_timeout))
        url = service.url
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        plan = Plan(
            service.pid, options.jobs, options.rounds, options.block, started + options.timeout
        )
        print(f"1/3 sync submits: {options.rounds} x {options.jobs} a side ...", flush=True)
        sync = bench_sync(url, plan)
        service.check_alive()
        print(f"2/3 async submits: {options.rounds} x {options.jobs} a side ...", flush=True)
        aio = asyncio.run(bench_async(url, plan))
        service.check_alive()
        print(f"3/3 submit -> result: {options.latency_jobs} jobs a way ...", flush=True)
        latency = bench_results(url, options.latency_jobs, plan)
        profile = None
        if options.profile:
            print(f"    cProfile of {options.profile} Client.submit ...", flush=True)
            profile = profile_client(url, options.profile)
        service.check_alive()
        print(f"measured in {time.monotonic() - started:.1f} s", flush=True)
        return Results(sync, aio, latency, profile, (load_before, os.getloadavg()[0]))
    except BaseException:
        print(f"--- the service log ends with ---\n{service.log_tail()}", file=sys.stderr)
        raise
    finally:
        stop_and_report(service)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=2000, help="submits per round and side")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side (the median)")
    parser.add_argument("--latency-jobs", type=int, default=200, help="jobs per way, sequential")
    parser.add_argument(
        "--block", type=int, default=100, help="submits a side makes before the other's turn"
    )
    parser.add_argument("--concurrency", type=int, default=2, help="CONVEYOR_CONCURRENCY")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="cProfile N Client.submit calls"
    )
    parser.add_argument(
        "--timeout", type=float, default=300, help="seconds for all the measurements"
    )
    parser.add_argument("--startup-timeout", type=float, default=30, help="seconds for /health")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temp dir (database and service log)"
    )
    options = parser.parse_args(argv)
    for name in ("jobs", "rounds", "block", "latency_jobs", "concurrency"):
        if getattr(options, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if options.profile < 0:
        parser.error("--profile must be >= 0")
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    return bench_main(options, lambda path: run(options, path), report)


if __name__ == "__main__":
    sys.exit(main())

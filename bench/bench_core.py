"""Benchmark the core of Conveyor against a real service subprocess.

Starts ``hypercorn --config hypercorn.toml "service.app:create_app()"`` on a pre-bound free port
with a fresh SQLite file in a temporary directory, then measures:

1. throughput: N no-op jobs submitted over HTTP and run to completion (completion is seen on the
   ``/events`` stream), plus the rate of the HTTP submits alone;
2. submit→start latency on an idle service: sequential jobs, each submitted after the previous one
   finished (server timestamps, and client-observed POST → ``running`` event);
3. cancel latency: a running ``service.demo.sleep`` job, POST ``/jobs/<id>/cancel`` → response.

Run it from the repository root::

    python bench/bench_core.py [--jobs 5000] [--concurrency 2] [--in-flight 32] ...

It exits non-zero with a message when anything fails or takes too long.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
from httpx_sse import aconnect_sse

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
R = TypeVar("R")

NOOP = "service.demo.noop"
SLEEP = "service.demo.sleep"
TERMINAL = frozenset({"succeeded", "failed", "canceled"})
SERVICE_APP = "service.app:create_app()"  # what hypercorn serves: the service as users run it


class BenchError(Exception):
    """A failure the benchmark reports and exits on."""


async def within(seconds: float, what: str, awaitable: Awaitable[T]) -> T:
    """``awaitable``'s result, or BenchError after ``seconds``."""
    try:
        async with asyncio.timeout(seconds):  # not wait_for: on 3.11 it can swallow a cancel
            return await awaitable
    except TimeoutError:
        raise BenchError(f"timed out after {seconds:g} s waiting for {what}") from None


def percentile(values: list[float], pct: float) -> float:
    """The ``pct`` percentile of ``values``, interpolating linearly between closest ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def parse_iso(text: Any) -> float:
    """Epoch seconds of the service's ISO-8601 timestamps (``2026-11-21T10:49:00.123Z``)."""
    if not isinstance(text, str):
        raise BenchError(f"expected an ISO timestamp, got {text!r}")
    return datetime.fromisoformat(text).timestamp()


# -- /proc ------------------------------------------------------------------------------------


def proc_status_kb(pid: int, key: str) -> int | None:
    """A ``kB`` field (``VmHWM``, ``VmRSS``) of ``/proc/<pid>/status``; None if unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far; None if unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rfind(b")") + 2 :].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    except (OSError, ValueError, IndexError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    """The direct children of ``pid`` (the worker processes of the service)."""
    children: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return children
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                children.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            continue
    return children


def is_worker(pid: int) -> bool:
    """Whether ``pid`` runs ``python -m service.worker``."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"\0service.worker\0" in f.read()
    except OSError:
        return False


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaps counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] not in (b"Z", b"X")


def machine() -> dict[str, str]:
    model = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": model,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": platform.platform(),
    }


# -- the service ------------------------------------------------------------------------------


class Service:
    """The service as a user runs it, on a free port passed as a pre-bound socket."""

    def __init__(
        self, workdir: Path, concurrency: int, cancel_grace_s: float | None,
        app: str = SERVICE_APP,
    ) -> None:  # fmt: skip
        self.workdir = workdir
        self.app = app  # hypercorn's application: the service, or another to compare with
        self.log = workdir / "service.log"
        self.database = workdir / "conveyor.db"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        pythonpath = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        env.update(
            PYTHONPATH=pythonpath,
            CONVEYOR_DATABASE=str(self.database),
            CONVEYOR_TASKS="service.demo",
            CONVEYOR_CONCURRENCY=str(concurrency),
        )
        if cancel_grace_s is not None:
            env["CONVEYOR_CANCEL_GRACE_S"] = str(cancel_grace_s)
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.worker_hwm_kb = 0  # the largest VmHWM seen among worker processes
        self.workers_seen: set[int] = set()

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise BenchError("the service is not started")
        return self.proc.pid

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            sock.listen(1024)  # before anyone connects: no ConnectError race
            self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
            fd = sock.fileno()
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [
                        sys.executable, "-m", "hypercorn", "--config", str(ROOT / "hypercorn.toml"),
                        "--bind", f"fd://{fd}", self.app,
                    ],
                    cwd=self.workdir, env=self.env, pass_fds=(fd,), stdout=log, stderr=log,
                )  # fmt: skip
        finally:
            sock.close()  # the service holds it now; if it dies, connecting fails at once

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise BenchError(f"the service exited (code {code})")

    async def wait_ready(self, timeout_s: float) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as client:
            deadline = time.monotonic() + timeout_s
            last = "no answer"
            while True:
                self.check_alive()
                try:
                    response = await client.get("/health")
                    if response.status_code == 200:
                        return
                    last = f"{response.status_code} {response.text[:200]}"
                except httpx.TransportError as exc:
                    last = repr(exc)
                if time.monotonic() > deadline:
                    raise BenchError(f"/health not 200 after {timeout_s:g} s; last: {last}")
                await asyncio.sleep(0.05)

    def sample_workers(self) -> None:
        if self.proc is None:
            return
        for pid in child_pids(self.proc.pid):
            if not is_worker(pid):  # e.g. forked but not yet exec'd: the service's own memory
                continue
            self.workers_seen.add(pid)
            hwm = proc_status_kb(pid, "VmHWM")
            if hwm is not None:
                self.worker_hwm_kb = max(self.worker_hwm_kb, hwm)

    async def watch_workers(self, interval_s: float = 0.25) -> None:
        while True:
            self.sample_workers()
            await asyncio.sleep(interval_s)

    def stop(self, timeout_s: float = 15) -> str | None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout_s``; idempotent.

        Returns how it went, or None if there was nothing to stop.
        """
        if self.proc is None or self.proc.poll() is not None:
            return None
        self.sample_workers()
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
            how = f"stopped by SIGTERM in {time.monotonic() - start:.2f} s"
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)  # its workers notice the parent is gone and kill their groups
            how = f"ignored SIGTERM for {timeout_s:g} s and was killed"
        how += f", exit code {self.proc.returncode}"
        deadline = time.monotonic() + 3
        while (left := [p for p in self.workers_seen if process_alive(p)]) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
        if left:
            how += f"; worker process(es) {left} still alive 3 s later"
        return how

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError as exc:
            return f"(no log: {exc})"


# -- the event stream -------------------------------------------------------------------------


@dataclass
class Sighting:
    """When the client saw a job's state event, and the service's time stamp on it."""

    seen: float  # time.monotonic() at arrival
    at: float  # the event's ``at``, epoch seconds


@dataclass
class EventWatcher:
    """Reads ``/events`` and lets coroutines wait for a job to reach a state."""

    states: dict[str, dict[str, Sighting]] = field(default_factory=dict)
    count: dict[str, int] = field(default_factory=dict)
    failure: BaseException | None = None
    _waiters: dict[str, list[tuple[str, asyncio.Future[Sighting]]]] = field(default_factory=dict)

    def on_state(self, job_id: str, state: str, at: float) -> None:
        seen = self.states.setdefault(job_id, {})
        if state not in seen:  # the first time: a requeued job would report running again
            seen[state] = Sighting(time.monotonic(), at)
            self.count[state] = self.count.get(state, 0) + 1
        waiters = self._waiters.pop(job_id, [])
        for wanted, future in waiters:
            self._settle(job_id, wanted, future)

    def fail(self, exc: BaseException) -> None:
        self.failure = exc
        for waiters in self._waiters.values():
            for _, future in waiters:
                if not future.done():
                    future.set_exception(BenchError(f"the event stream failed: {exc!r}"))
        self._waiters.clear()

    def _settle(self, job_id: str, wanted: str, future: asyncio.Future[Sighting]) -> None:
        if future.done():
            return
        seen = self.states.get(job_id, {})
        if wanted in seen:
            future.set_result(seen[wanted])
            return
        ended = TERMINAL.intersection(seen)
        if ended:
            future.set_exception(
                BenchError(f"job {job_id} ended {', '.join(ended)} instead of reaching {wanted}")
            )
            return
        self._waiters.setdefault(job_id, []).append((wanted, future))

    async def wait(self, job_id: str, state: str, timeout_s: float) -> Sighting:
        if self.failure is not None:
            raise BenchError(f"the event stream failed: {self.failure!r}")
        future: asyncio.Future[Sighting] = asyncio.get_running_loop().create_future()
        self._settle(job_id, state, future)
        return await within(timeout_s, f"job {job_id} to be {state}", future)

    async def run(self, client: httpx.AsyncClient, connected: asyncio.Event) -> None:
        """Read the stream until cancelled; any other ending is a failure."""
        try:
            # Last-Event-ID 0: replay from the start, so no event can fall between connecting
            # and the server subscribing this stream.
            async with aconnect_sse(
                client, "GET", "/events", headers={"Last-Event-ID": "0"}
            ) as source:
                if source.response.status_code != 200:
                    raise BenchError(f"GET /events answered {source.response.status_code}")
                connected.set()
                async for sse in source.aiter_sse():
                    if sse.event != "state":
                        continue
                    data = json.loads(sse.data)
                    self.on_state(data["job_id"], data["state"], parse_iso(data["at"]))
            raise BenchError("the service ended the event stream")
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.fail(exc)
            raise


# -- the measurements -------------------------------------------------------------------------


@dataclass
class Throughput:
    jobs: int
    in_flight: int
    submit_s: float
    total_s: float
    server_s: float  # first created_at → last succeeded event's ``at``, by the service's clock
    server_cpu_s: float | None
    client_cpu_s: float

    @property
    def rate(self) -> float:
        return self.jobs / self.total_s

    @property
    def submit_rate(self) -> float:
        return self.jobs / self.submit_s


@dataclass
class Latencies:
    """Milliseconds."""

    values: list[float]

    @property
    def p50(self) -> float:
        return percentile(self.values, 50)

    @property
    def p99(self) -> float:
        return percentile(self.values, 99)

    @property
    def max(self) -> float:
        return max(self.values)

    def line(self) -> str:
        return (
            f"p50 {self.p50:8.2f} ms   p99 {self.p99:8.2f} ms   max {self.max:8.2f} ms"
            f"   (n={len(self.values)})"
        )


async def submit(client: httpx.AsyncClient, task: str, args: list[Any]) -> dict[str, Any]:
    response = await client.post("/jobs", json={"task": task, "args": args})
    if response.status_code != 202:
        raise BenchError(f"POST /jobs {task} answered {response.status_code}: {response.text}")
    job: dict[str, Any] = response.json()
    return job


async def submit_batch(client: httpx.AsyncClient, count: int) -> list[dict[str, Any]]:
    response = await client.post("/jobs/batch", json={"jobs": [{"task": NOOP}] * count})
    if response.status_code != 202:
        raise BenchError(f"POST /jobs/batch answered {response.status_code}: {response.text}")
    jobs: list[dict[str, Any]] = response.json()["jobs"]
    return jobs


def cpu_self_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def bench_throughput(
    service: Service,
    clients: list[httpx.AsyncClient],
    watcher: EventWatcher,
    *,
    jobs: int,
    timeout_s: float,
    batch: int = 1,
) -> Throughput:
    """Submit ``jobs`` no-op jobs, one request in flight per client, and wait for them all.

    With ``batch`` > 1, each request is a ``POST /jobs/batch`` of that many jobs.
    """
    created: list[float] = []
    ids: list[str] = []
    next_index = 0

    async def submitter(client: httpx.AsyncClient) -> None:
        nonlocal next_index
        while next_index < jobs:
            count = min(batch, jobs - next_index)
            next_index += count
            if batch == 1:
                made = [await submit(client, NOOP, [])]
            else:
                made = await submit_batch(client, count)
            for job in made:
                ids.append(job["id"])
                created.append(parse_iso(job["created_at"]))

    server_cpu0 = proc_cpu_s(service.pid)
    client_cpu0 = cpu_self_s()
    start = time.monotonic()
    await within(
        timeout_s,
        f"{jobs} submits",
        asyncio.gather(*(submitter(client) for client in clients[:jobs])),
    )
    submitted = time.monotonic()
    last: Sighting | None = None
    deadline = start + timeout_s
    for job_id in ids:  # nearly all have long finished: this is one pass over a dict
        sighting = await watcher.wait(job_id, "succeeded", max(0.0, deadline - time.monotonic()))
        if last is None or sighting.seen > last.seen:
            last = sighting
    assert last is not None
    server_cpu1 = proc_cpu_s(service.pid)
    server_cpu = None if server_cpu0 is None or server_cpu1 is None else server_cpu1 - server_cpu0
    return Throughput(
        jobs=jobs,
        in_flight=min(len(clients), -(-jobs // batch)),
        submit_s=submitted - start,
        total_s=last.seen - start,
        server_s=max(s.at for s in (watcher.states[i]["succeeded"] for i in ids)) - min(created),
        server_cpu_s=server_cpu,
        client_cpu_s=cpu_self_s() - client_cpu0,
    )


async def bench_start_latency(
    client: httpx.AsyncClient, watcher: EventWatcher, *, jobs: int, timeout_s: float
) -> tuple[Latencies, Latencies]:
    """(started_at - created_at from the records, POST sent → ``running`` event seen)."""
    server: list[float] = []
    observed: list[float] = []
    for _ in range(jobs):
        sent = time.monotonic()
        job = await submit(client, NOOP, [])
        running = await watcher.wait(job["id"], "running", timeout_s)
        await watcher.wait(job["id"], "succeeded", timeout_s)
        response = await client.get(f"/jobs/{job['id']}")
        if response.status_code != 200:
            raise BenchError(f"GET /jobs/{job['id']} answered {response.status_code}")
        record = response.json()
        if record["state"] != "succeeded":
            raise BenchError(f"job {job['id']} is {record['state']}, expected succeeded")
        server.append((parse_iso(record["started_at"]) - parse_iso(record["created_at"])) * 1000)
        observed.append((running.seen - sent) * 1000)
    return Latencies(server), Latencies(observed)


async def bench_cancel(
    client: httpx.AsyncClient, watcher: EventWatcher, *, jobs: int, timeout_s: float
) -> Latencies:
    """POST /jobs/<id>/cancel of a running job → its 200 response."""
    latencies: list[float] = []
    for _ in range(jobs):
        job = await submit(client, SLEEP, [30])
        await watcher.wait(job["id"], "running", timeout_s)
        start = time.monotonic()
        response = await client.post(f"/jobs/{job['id']}/cancel")
        elapsed = time.monotonic() - start
        if response.status_code != 200:
            raise BenchError(
                f"cancel of {job['id']} answered {response.status_code}: {response.text}"
            )
        if response.json().get("state") != "canceled":
            raise BenchError(f"cancel of {job['id']} answered {response.text}")
        latencies.append(elapsed * 1000)
        await watcher.wait(job["id"], "canceled", timeout_s)
    return Latencies(latencies)


# -- the report -------------------------------------------------------------------------------


@dataclass
class Results:
    throughput: Throughput
    batched: Throughput
    start_server: Latencies
    start_observed: Latencies
    cancel: Latencies
    server_hwm_kb: int | None
    worker_hwm_kb: int
    workers_seen: int


def mib(kb: int | None) -> str:
    return "n/a" if kb is None else f"{kb / 1024:.1f} MiB"


def report(results: Results, options: argparse.Namespace, host: dict[str, str]) -> None:
    tp = results.throughput
    print()
    print("== Conveyor core benchmark ==")
    print(f"machine:     nproc={host['nproc']}, {host['cpu']}, {host['python']}, {host['os']}")
    print(
        f"service:     hypercorn (hypercorn.toml), CONVEYOR_CONCURRENCY={options.concurrency}, "
        f"SQLite in a temp dir, client on the same machine"
    )
    print()
    print(f"1. Throughput: {tp.jobs} x {NOOP}, {tp.in_flight} submits in flight")
    print(
        f"   end to end:   {tp.rate:9.1f} jobs/s   ({tp.total_s:.2f} s, first submit -> last "
        "'succeeded' event seen on /events)"
    )
    print(f"   submit only:  {tp.submit_rate:9.1f} jobs/s   ({tp.submit_s:.2f} s of POST /jobs)")
    print(
        f"   server clock: {tp.jobs / tp.server_s:9.1f} jobs/s   ({tp.server_s:.2f} s, first "
        "created_at -> last succeeded event 'at')"
    )
    server_cpu = "n/a" if tp.server_cpu_s is None else f"{tp.server_cpu_s:.2f} s"
    print(
        f"   CPU used:     service process {server_cpu}, this client {tp.client_cpu_s:.2f} s "
        f"(over {tp.total_s:.2f} s wall)"
    )
    bt = results.batched
    print(
        f"1b. The same with POST /jobs/batch, {options.batch} jobs a request, "
        f"{bt.in_flight} in flight"
    )
    print(f"   end to end:   {bt.rate:9.1f} jobs/s   ({bt.total_s:.2f} s)")
    print(
        f"   submit only:  {bt.submit_rate:9.1f} jobs/s   ({bt.submit_s:.2f} s of POST /jobs/batch)"
    )
    print()
    print(f"2. Submit -> start latency on an idle service ({options.latency_jobs} sequential jobs)")
    print(f"   started_at - created_at (records, 1 ms resolution): {results.start_server.line()}")
    print(f"   POST sent -> 'running' event seen (client):        {results.start_observed.line()}")
    print()
    print(f"3. Cancel latency ({options.cancel_jobs} x {SLEEP}(30), canceled while running)")
    print(f"   POST /jobs/<id>/cancel -> 200 canceled: {results.cancel.line()}")
    print()
    print(
        f"Peak RSS (VmHWM): service process {mib(results.server_hwm_kb)}; largest worker "
        f"{mib(results.worker_hwm_kb or None)} ({results.workers_seen} worker processes sampled)"
    )
    print()
    print("| Measure | Result |")
    print("|---|---|")
    print(
        f"| Throughput, {tp.jobs:,} no-op jobs, concurrency {options.concurrency} "
        f"(submit → all done) | {tp.rate:,.0f} jobs/s |"
    )
    print(
        f"| HTTP submit rate ({tp.in_flight} requests in flight) | {tp.submit_rate:,.0f} jobs/s |"
    )
    print(
        f"| Throughput with `POST /jobs/batch` ({options.batch} a request, submit → all done) "
        f"| {bt.rate:,.0f} jobs/s |"
    )
    ss, so = results.start_server, results.start_observed
    print(
        f"| Submit → start, idle service (`started_at - created_at`), p50 / p99 "
        f"| {ss.p50:.1f} / {ss.p99:.1f} ms |"
    )
    print(
        f"| Submit → `running` event seen by the client, p50 / p99 "
        f"| {so.p50:.1f} / {so.p99:.1f} ms |"
    )
    print(
        f"| Cancel a running job (request → response), p50 / p99 "
        f"| {results.cancel.p50:.1f} / {results.cancel.p99:.1f} ms |"
    )
    print(f"| Peak RSS, service process (workers each) | {mib(results.server_hwm_kb)} "
          f"({mib(results.worker_hwm_kb or None)}) |")  # fmt: skip
    print(f"| Machine | {host['nproc']} CPUs ({host['cpu']}), {host['python']} |")


def stop_and_report(service: Service) -> None:
    """Stop the service, saying how it stopped and what its log warned of."""
    stopped = service.stop()
    if stopped is not None:
        print(f"the service {stopped}")
    problems = log_problems(service)
    if problems:
        print(f"the service log has {len(problems)} warning/error line(s), e.g.:")
        for line in problems[:10]:
            print(f"  {line[:300]}")


def log_problems(service: Service) -> list[str]:
    """The service log's warnings, errors and tracebacks."""
    try:
        lines = service.log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    marks = ("[WARNING]", "[ERROR]", "[CRITICAL]", "Traceback", "Error:")
    return [line for line in lines if any(mark in line for mark in marks)]


# -- main -------------------------------------------------------------------------------------


async def run(options: argparse.Namespace, workdir: Path) -> Results:
    service = Service(workdir, options.concurrency, options.cancel_grace)
    sampler: asyncio.Task[None] | None = None
    reader: asyncio.Task[None] | None = None
    try:
        service.start()
        print(f"service pid {service.pid} on {service.url}; log {service.log}", flush=True)
        await service.wait_ready(options.startup_timeout)
        sampler = asyncio.create_task(service.watch_workers())
        watcher = EventWatcher()
        timeout = httpx.Timeout(options.request_timeout)
        stream_timeout = httpx.Timeout(options.request_timeout, read=60)  # keep-alives: 15 s
        # One client per request in flight, each with one keep-alive connection: a single
        # httpx client with a pool of 32 connections spends more CPU in its pool bookkeeping
        # than the service spends on the requests, and would measure itself, not the service.
        one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with contextlib.AsyncExitStack() as stack:
            stream_client = await stack.enter_async_context(
                httpx.AsyncClient(base_url=service.url, timeout=stream_timeout)
            )
            clients = [
                await stack.enter_async_context(
                    httpx.AsyncClient(base_url=service.url, timeout=timeout, limits=one)
                )
                for _ in range(options.in_flight)
            ]
            client = clients[0]
            connected = asyncio.Event()
            reader = asyncio.create_task(watcher.run(stream_client, connected))
            connecting = asyncio.create_task(connected.wait())
            done, _ = await asyncio.wait(
                {reader, connecting}, timeout=10, return_when=asyncio.FIRST_COMPLETED
            )
            connecting.cancel()
            if reader in done:
                reader.result()  # raises why it ended
            if not connected.is_set():
                raise BenchError("timed out after 10 s connecting to /events")

            print(f"1/3 throughput: {options.jobs} no-op jobs ...", flush=True)
            throughput = await bench_throughput(
                service, clients, watcher, jobs=options.jobs, timeout_s=options.timeout,
            )  # fmt: skip
            print(f"1b  throughput, batches of {options.batch} ...", flush=True)
            batched = await bench_throughput(
                service, clients[: options.batch_in_flight], watcher,
                jobs=options.jobs, timeout_s=options.timeout, batch=options.batch,
            )  # fmt: skip
            print(f"2/3 submit -> start latency: {options.latency_jobs} jobs ...", flush=True)
            start_server, start_observed = await bench_start_latency(
                client, watcher, jobs=options.latency_jobs, timeout_s=options.wait_timeout
            )
            print(f"3/3 cancel latency: {options.cancel_jobs} jobs ...", flush=True)
            cancel = await bench_cancel(
                client, watcher, jobs=options.cancel_jobs, timeout_s=options.wait_timeout
            )
            service.check_alive()
            service.sample_workers()
            server_hwm = proc_status_kb(service.pid, "VmHWM")
        return Results(
            throughput, batched, start_server, start_observed, cancel,
            server_hwm, service.worker_hwm_kb, len(service.workers_seen),
        )  # fmt: skip
    except BaseException:
        print(f"--- the service log ends with ---\n{service.log_tail()}", file=sys.stderr)
        if service.proc is not None and service.proc.poll() is not None:
            print(f"the service exited with code {service.proc.returncode}", file=sys.stderr)
        raise
    finally:
        for task in (reader, sampler):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        stop_and_report(service)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=5000, help="no-op jobs for the throughput")
    parser.add_argument("--concurrency", type=int, default=2, help="CONVEYOR_CONCURRENCY")
    parser.add_argument("--in-flight", type=int, default=32, help="concurrent submit requests")
    parser.add_argument("--batch", type=int, default=100, help="jobs per POST /jobs/batch")
    parser.add_argument(
        "--batch-in-flight", type=int, default=4, help="concurrent POST /jobs/batch requests"
    )
    parser.add_argument("--latency-jobs", type=int, default=200, help="sequential jobs")
    parser.add_argument("--cancel-jobs", type=int, default=50, help="jobs canceled while running")
    parser.add_argument(
        "--cancel-grace", type=float, default=None,
        help="CONVEYOR_CANCEL_GRACE_S (default: the service's own)",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=float, default=600, help="seconds for the whole throughput run"
    )
    parser.add_argument(
        "--wait-timeout", type=float, default=30, help="seconds to wait for one job's event"
    )
    parser.add_argument("--request-timeout", type=float, default=30, help="seconds per request")
    parser.add_argument("--startup-timeout", type=float, default=30, help="seconds for /health")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temp dir (database and service log)"
    )
    options = parser.parse_args(argv)
    for name in ("jobs", "concurrency", "in_flight", "latency_jobs", "cancel_jobs"):
        if getattr(options, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return options


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    if keep:
        path = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
        print(f"keeping {path}")
        yield path
    else:
        with tempfile.TemporaryDirectory(prefix="conveyor-bench-") as name:
            yield Path(name)


def bench_main(
    options: argparse.Namespace,
    measure: Callable[[Path], R],
    report_on: Callable[[R, argparse.Namespace, dict[str, str]], None],
) -> int:
    """Measure in a work directory, then report; a failure is a message and exit status 1."""
    host = machine()
    try:
        with workdir(options.keep) as path:
            results = measure(path)
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"bench failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    report_on(results, options, host)
    return 0


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    return bench_main(options, lambda path: asyncio.run(run(options, path)), report)


if __name__ == "__main__":
    sys.exit(main())

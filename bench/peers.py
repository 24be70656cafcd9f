"""Other job queues through the workloads of ``python -m bench``: ``--peers``.

Each peer runs as its users run it: its own worker command, in processes of its own, with two
workers (the concurrency of Conveyor's figures), on a fresh store; it is driven by its own Python
client in the shapes of Conveyor's workloads. Huey on SQLite always; Huey on Redis and SAQ when
a ``redis-server`` binary is there to start a throwaway server. Needs the ``peers`` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from huey.exceptions import ResultTimeout
from saq.job import Status

from .bench_core import ROOT, BenchError, percentile
from .figures import Figures, Plan
from .peer_tasks import HUEY_STORE_ENV, SAQ_REDIS_ENV, make_huey, saq_queue

Runs = dict[str, list[float]]
STARTUP_S = 30  # for a peer's workers to take their first job
RESULT_TIMEOUT_S = 30
STOP_S = 10  # SIGTERM to SIGKILL
CANCEL = ("cancel_p50", "cancel_p99")
# huey_consumer's default worker type, the one its users run ("when in doubt, thread is the
# safest choice", says its help): 2 threads in one process
HUEY_CONSUMER = ["-m", "huey.bin.huey_consumer", "bench.peer_tasks.huey", "-w", "2", "-k", "thread"]
# SAQ scales by processes: 2 of them, each running one job at a time (peer_tasks.SAQ_CONCURRENCY)
SAQ_WORKER = ["-m", "saq", "bench.peer_tasks.saq_settings", "--workers", "2"]


@dataclass(frozen=True)
class Peer:
    name: str  # as the table heads its column
    runs_as: str
    measure: Callable[[Path, Plan], Figures]  # one run of every workload, in a fresh directory
    cannot: tuple[str, ...] = ()  # figures the peer has no way to produce


@dataclass(frozen=True)
class PeerRuns:
    peer: Peer
    runs: Runs  # each figure's values, one per run


# -- processes ---------------------------------------------------------------------------------


@contextlib.contextmanager
def started(
    command: list[str], workdir: Path, log_name: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` run in ``workdir`` in a session of its own (so that its own children stop
    with it, and a Ctrl-C reaches the benchmark only), its output to ``log_name``; stopped at
    the end, whatever happened."""
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    with open(workdir / log_name, "ab") as log:
        proc = subprocess.Popen(
            command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONPATH": pythonpath, **(env or {})},
        )  # fmt: skip
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process's group, SIGKILL to whatever is left of it after ``STOP_S``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(STOP_S)
    with contextlib.suppress(ProcessLookupError):  # the group outlives its leader if it must
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def free_port() -> int:
    # redis-server takes a port number, not a bound socket: a port free a moment ago will do
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A throwaway ``redis-server`` on a free port, storing nothing on disk: its URL."""
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", str(workdir)]  # fmt: skip
    with started(command, workdir, "redis-server.log") as proc:
        url = f"redis://127.0.0.1:{port}"
        deadline = time.monotonic() + STARTUP_S
        while not _answers(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"redis-server did not answer (log in {workdir})")
            time.sleep(0.05)
        yield url


def _answers(url: str) -> bool:
    with redis.Redis.from_url(url) as client:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False


def flush(url: str) -> None:
    with redis.Redis.from_url(url) as client:
        client.flushall()


# -- Huey ---------------------------------------------------------------------------------------


def huey_figures(store: str, workdir: Path, plan: Plan) -> Figures:
    """Huey, with its client and ``huey_consumer``, on ``store`` (a file or a Redis URL)."""
    huey, noop = make_huey(store)
    huey.flush()
    started_at = time.perf_counter()
    for _ in range(plan.submits):  # no consumer yet: none of them runs
        noop()
    figures = {"submit_1": plan.submits / (time.perf_counter() - started_at)}
    huey.flush()
    command = [sys.executable, *HUEY_CONSUMER]
    with started(command, workdir, "huey_consumer.log", {HUEY_STORE_ENV: store}) as consumer:
        _huey_result(noop(), STARTUP_S, consumer)
        started_at = time.perf_counter()
        results = [noop() for _ in range(plan.jobs)]
        for result in results:
            _huey_result(result, RESULT_TIMEOUT_S, consumer)
        figures["e2e_single"] = plan.jobs / (time.perf_counter() - started_at)
        results_ms = [_huey_result_ms(noop, consumer) for _ in range(plan.latency_jobs)]
    figures["result_p50"] = percentile(results_ms, 50)
    figures["result_p99"] = percentile(results_ms, 99)
    return figures


def _huey_result(result: Any, timeout_s: float, consumer: subprocess.Popen[bytes]) -> None:
    """Wait, as Huey's users do (``get(blocking=True)``: it polls, from every 50 ms)."""
    try:
        result.get(blocking=True, timeout=timeout_s)
    except ResultTimeout:
        alive = "running" if consumer.poll() is None else f"exited ({consumer.returncode})"
        raise BenchError(f"no Huey result within {timeout_s:g} s; consumer {alive}") from None


def _huey_result_ms(noop: Callable[[], Any], consumer: subprocess.Popen[bytes]) -> float:
    started_at = time.perf_counter()
    _huey_result(noop(), RESULT_TIMEOUT_S, consumer)
    return (time.perf_counter() - started_at) * 1000


# -- SAQ ----------------------------------------------------------------------------------------


def saq_figures(url: str, workdir: Path, plan: Plan) -> Figures:
    """SAQ, with its client and its worker command, on the Redis server at ``url``."""
    flush(url)
    figures = asyncio.run(_with_queue(url, lambda queue: _saq_submits(queue, plan.submits)))
    flush(url)
    command = [sys.executable, *SAQ_WORKER]
    with started(command, workdir, "saq.log", {SAQ_REDIS_ENV: url}):
        figures |= asyncio.run(_with_queue(url, lambda queue: _saq_workloads(queue, plan)))
    return figures


async def _with_queue(url: str, work: Callable[[Any], Awaitable[Figures]]) -> Figures:
    queue = saq_queue(url)
    await queue.connect()
    try:
        return await work(queue)
    finally:
        await queue.disconnect()


async def _saq_submits(queue: Any, count: int) -> Figures:
    started_at = time.perf_counter()
    for _ in range(count):  # no worker yet: none of them runs
        await queue.enqueue("saq_noop")
    return {"submit_1": count / (time.perf_counter() - started_at)}


async def _saq_workloads(queue: Any, plan: Plan) -> Figures:
    # SAQ's listeners share one subscription, opened by the first and closed with the last:
    # held open by one more for the whole run, a listener registered before a job is
    # enqueued (or aborted) sees its end however soon it comes
    keeper = asyncio.create_task(queue.listen(["keeper"], lambda _key, _status: False, None))
    try:
        await _saq_result_ms(queue, STARTUP_S)  # the workers are up
        figures = {"e2e_single": await _saq_end_to_end(queue, plan.jobs)}
        results_ms = [await _saq_result_ms(queue) for _ in range(plan.latency_jobs)]
        cancels_ms = [await _saq_cancel_ms(queue) for _ in range(plan.cancels)]
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
    figures["result_p50"] = percentile(results_ms, 50)
    figures["result_p99"] = percentile(results_ms, 99)
    figures["cancel_p50"] = percentile(cancels_ms, 50)
    figures["cancel_p99"] = percentile(cancels_ms, 99)
    return figures


async def _saq_end_to_end(queue: Any, count: int) -> float:
    started_at = time.perf_counter()
    left = [(await queue.enqueue("saq_noop")).key for _ in range(count)]
    deadline = time.monotonic() + RESULT_TIMEOUT_S
    while left:  # as SAQ's own Queue.map waits for its jobs, at a shorter interval
        jobs = await queue.jobs(left)
        if failed := [job for job in jobs if job.status in (Status.FAILED, Status.ABORTED)]:
            raise BenchError(f"a SAQ no-op job did not complete: {failed[0].error}")
        left = [job.key for job in jobs if job.status != Status.COMPLETE]
        if time.monotonic() > deadline:
            raise BenchError(f"{len(left)} SAQ jobs not complete {RESULT_TIMEOUT_S} s after")
        await asyncio.sleep(0.01)
    return count / (time.perf_counter() - started_at)


async def _saq_result_ms(queue: Any, timeout_s: float = RESULT_TIMEOUT_S) -> float:
    key = os.urandom(8).hex()
    return await _until_ended(queue, key, Status.COMPLETE, timeout_s,
                              lambda: queue.enqueue("saq_noop", key=key))  # fmt: skip


async def _saq_cancel_ms(queue: Any) -> float:
    """A running job aborted, until SAQ says it is: the worker cancels it at its next look
    for aborted jobs (once a second), once it has run for a second."""
    job = await queue.enqueue("saq_sleep", seconds=30, timeout=60)
    deadline = time.monotonic() + STARTUP_S
    while (await queue.job(job.key)).status != Status.ACTIVE:
        if time.monotonic() > deadline:
            raise BenchError(f"a SAQ job did not start within {STARTUP_S} s")
        await asyncio.sleep(0.002)
    return await _until_ended(queue, job.key, Status.ABORTED, RESULT_TIMEOUT_S,
                              lambda: job.abort("canceled by the benchmark"))  # fmt: skip


async def _until_ended(
    queue: Any, key: str, want: Status, timeout_s: float, act: Callable[[], Awaitable[object]]
) -> float:
    """Milliseconds from ``act`` (which enqueues or aborts the job ``key``) until its end is
    seen, pushed by SAQ as its ``Job.refresh(until_complete=)`` waits for it."""
    ended: list[Status] = []

    def is_end(_key: str, status: Status) -> bool:
        if status in (Status.COMPLETE, Status.FAILED, Status.ABORTED):
            ended.append(status)
        return bool(ended)

    listener = asyncio.create_task(queue.listen([key], is_end, timeout_s))
    await asyncio.sleep(0)  # the listener is registered: no end can come before it listens
    started_at = time.perf_counter()
    await act()
    try:
        await listener
    except TimeoutError:
        raise BenchError(f"SAQ job {key} did not end within {timeout_s:g} s") from None
    if ended != [want]:
        raise BenchError(f"SAQ job {key} ended {ended[0]}, not {want}")
    return (time.perf_counter() - started_at) * 1000


# -- all of them --------------------------------------------------------------------------------


def peers(redis_url: str | None) -> list[Peer]:
    """Huey on SQLite; with a Redis server, Huey on it and SAQ."""
    found = [
        Peer("Huey, SQLite", "SqliteHuey; huey_consumer -w 2 -k thread",
             lambda path, plan: huey_figures(str(path / "huey.db"), path, plan), CANCEL),
    ]  # fmt: skip
    if redis_url is not None:
        url = redis_url
        found += [
            Peer("Huey, Redis", "RedisHuey; huey_consumer -w 2 -k thread",
                 lambda path, plan: huey_figures(url, path, plan), CANCEL),
            Peer("SAQ, Redis", "saq --workers 2, concurrency 1 each",
                 lambda path, plan: saq_figures(url, path, plan)),
        ]  # fmt: skip
    return found


def measure_peers(plan: Plan, repeat: int, workdir: Path) -> list[PeerRuns]:
    """Every peer's workloads ``repeat`` times, each run in a directory of its own."""
    with contextlib.ExitStack() as stack:
        redis_url = None
        if shutil.which("redis-server"):
            (workdir / "redis").mkdir(parents=True, exist_ok=True)
            redis_url = stack.enter_context(redis_server(workdir / "redis"))
        else:
            print("no redis-server: Huey on Redis and SAQ not measured", file=sys.stderr)
        return [_repeated(peer, plan, repeat, workdir) for peer in peers(redis_url)]


def _repeated(peer: Peer, plan: Plan, repeat: int, workdir: Path) -> PeerRuns:
    runs: Runs = {}
    for n in range(repeat):
        print(f"{peer.name}, run {n + 1} of {repeat} ...", file=sys.stderr, flush=True)
        path = workdir / f"{peer.name.replace(', ', '-').lower()}-{n}"
        path.mkdir(parents=True)
        for key, value in peer.measure(path, plan).items():
            runs.setdefault(key, []).append(value)
    return PeerRuns(peer, runs)

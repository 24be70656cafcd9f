"""Many event streams at once, some of them never reading: does everyone else still get every
event, in order, and does the service still answer?

Opens ``--clients`` streams on ``/events`` (raw sockets, HTTP/1.0: the body is the stream as
sent), of which ``--stalled`` never read a byte, then submits ``--jobs`` no-op jobs in batches
and waits until every reading stream has seen every job end. Meanwhile it times ``/health``
again and again, and reads the service's memory before and after.

Run it from the repository root (the service is started as bench_core starts it)::

    python bench/streams_load.py [--clients 1000] [--stalled 100] [--jobs 2000]

``tests/test_streams_load.py`` runs a smaller version against a service it starts.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import re
import socket
import statistics
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

import httpx

NOOP = "service.demo.noop"


@dataclass
class Reader:
    """One stream that reads: the ids it got, in order, and the jobs it saw end."""

    ids: list[int] = field(default_factory=list)
    ended: set[str] = field(default_factory=set)
    out_of_order: int = 0


@dataclass
class Report:
    clients: int
    stalled: int
    jobs: int
    events_per_reader: list[int] = field(default_factory=list)
    readers_complete: int = 0
    out_of_order: int = 0
    health_ms: list[float] = field(default_factory=list)
    fan_out_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        health = sorted(self.health_ms) or [0.0]
        p99 = health[min(len(health) - 1, int(len(health) * 0.99))]
        return "\n".join([
            f"streams: {self.clients} ({self.stalled} never reading)",
            f"jobs: {self.jobs}; readers that saw every job end: "
            f"{self.readers_complete} of {self.clients - self.stalled}",
            f"events out of order: {self.out_of_order}",
            f"all events to all readers in: {self.fan_out_s:.2f} s",
            f"/health meanwhile: p50 {statistics.median(health):.1f} ms, p99 {p99:.1f} ms, "
            f"max {health[-1]:.1f} ms (n={len(self.health_ms)})",
        ])  # fmt: skip


async def open_stream(
    host: str, port: int, *, stalled: bool
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port)
    sock = writer.get_extra_info("socket")
    if stalled:
        # a small window, never read: the service's writes to it back up at once
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    writer.write(f"GET /events HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    return reader, writer  # the writer held: dropped, it would close the connection


# a message's id and kind, and the job of a terminal state: read from whole chunks by regular
# expressions, so the readers (all in this one process) cost the machine little beside the
# service they measure
EVENT_ID = re.compile(rb"^id: (\d+)\nevent: ", re.MULTILINE)
ENDED = re.compile(
    rb'^data: (?=[^\n]*"state":"(?:succeeded|failed|canceled)")[^\n]*?"job_id":"([^"]+)"',
    re.MULTILINE,
)


async def read_events(stream: asyncio.StreamReader, seen: Reader, want: set[str]) -> None:
    """Read SSE messages until every job in ``want`` has ended."""
    await stream.readuntil(b"\r\n\r\n")  # the headers
    pending = b""
    while not want <= seen.ended:
        chunk = await stream.read(1 << 16)
        if not chunk:
            raise ConnectionError("the stream ended before every job did")
        pending += chunk
        cut = pending.rfind(b"\n\n")
        if cut < 0:
            continue
        whole, pending = pending[: cut + 2], pending[cut + 2 :]  # whole messages only
        last = seen.ids[-1] if seen.ids else 0
        for event_id in map(int, EVENT_ID.findall(whole)):
            if event_id <= last:
                seen.out_of_order += 1
            seen.ids.append(event_id)
            last = event_id
        seen.ended.update(job_id.decode() for job_id in ENDED.findall(whole))


async def run(url: str, clients: int, stalled: int, jobs: int, timeout_s: float = 120) -> Report:
    report = Report(clients, stalled, jobs)
    host, port = url.removeprefix("http://").split(":")
    opened = [await open_stream(host, int(port), stalled=n < stalled) for n in range(clients)]
    readers = [Reader() for _ in range(clients - stalled)]
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        await asyncio.sleep(0.5)  # every stream subscribed: its first message is "now"
        made: set[str] = set()
        started = time.monotonic()
        for first in range(0, jobs, 500):
            batch = [{"task": NOOP} for _ in range(min(500, jobs - first))]
            answer = (await client.post("/jobs/batch", json={"jobs": batch})).json()
            made |= {job["id"] for job in answer["jobs"]}
        reading = [
            asyncio.create_task(read_events(stream, seen, made))
            for (stream, _), seen in zip(opened[stalled:], readers, strict=True)
        ]
        # timed from a process of its own: this one is busy reading, and a thread here would
        # wait for its interpreter lock, delays that are not the service's
        spawn = multiprocessing.get_context("spawn")
        stop, times = spawn.Event(), spawn.Queue()
        probe = spawn.Process(target=_time_health, args=(url, stop, times), daemon=True)
        probe.start()
        try:
            await asyncio.wait_for(asyncio.gather(*reading), timeout_s)
        except TimeoutError:
            report.problems.append(f"not every reader saw every job end in {timeout_s:g} s")
        finally:
            stop.set()
            report.health_ms.extend(await asyncio.to_thread(times.get, True, 30))
            await asyncio.to_thread(probe.join, 10)
        report.fan_out_s = time.monotonic() - started
    for _, writer in opened:
        writer.close()
    report.events_per_reader = [len(r.ids) for r in readers]
    report.readers_complete = sum(1 for r in readers if made <= r.ended)
    report.out_of_order = sum(r.out_of_order for r in readers)
    if report.out_of_order:
        report.problems.append(f"{report.out_of_order} event(s) out of order")
    return report


def _time_health(url: str, stop: Event, times: Queue[list[float]]) -> None:
    """``/health`` timed every 20 ms until ``stop``; the times (ms) put on ``times``."""
    times_ms: list[float] = []
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.wait(0.02):
            before = time.perf_counter()
            client.get("/health")
            times_ms.append((time.perf_counter() - before) * 1000)
    times.put(times_ms)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.bench_core import Service, proc_status_kb, stop_and_report

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--stalled", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2000)
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory(prefix="conveyor-streams-") as workdir:
        service = Service(Path(workdir), concurrency=2, cancel_grace_s=None)
        service.env["CONVEYOR_MAX_STREAMS"] = str(args.clients + 10)
        service.start()
        try:
            asyncio.run(service.wait_ready(30))
            rss_before = proc_status_kb(service.pid, "VmRSS") or 0
            report = asyncio.run(run(service.url, args.clients, args.stalled, args.jobs))
            rss_after = proc_status_kb(service.pid, "VmRSS") or 0
        finally:
            stop_and_report(service)
    print(report.summary())
    print(f"service memory: {rss_before / 1024:.0f} MiB before, {rss_after / 1024:.0f} MiB after")
    for problem in report.problems:
        print("PROBLEM:", problem)
    sys.exit(1 if report.problems else 0)


if __name__ == "__main__":
    main()

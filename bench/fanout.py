"""One event fanned out to many ``/events`` streams: how long until every stream has it, and
what the open streams cost the service in memory.

The streams are read by a few processes of their own (each with its own loop), so that the
readers are not what is measured: a stream is an ``asyncio.BufferedProtocol`` that notes the
time a chunk arrives and counts the marks in it, with no per-message parsing. The service is idle
between two events, and each stream's time is taken against ``CLOCK_MONOTONIC``, which every
process on the machine shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import resource
import time
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import TYPE_CHECKING

from service.events import MAX_REST_S

from .bench_core import NOOP, BenchError, percentile, proc_cpu_s, proc_status_kb
from .rawhttp import Connection

if TYPE_CHECKING:
    from .figures import Plan

# the one event a held job makes when it is submitted; no other event carries it
MARK = b'"state":"scheduled"'
HELD_S = 3600  # the jobs' delay: none of them runs while they are measured
READER_PROCESSES = 4
READ_SIZE = 1 << 16  # bytes read at once at most, by a stream
OPEN_AT_ONCE = 50  # connections a reader process opens together: well inside the backlog
SUBSCRIBE_TIMEOUT_S = 60.0
EVENT_TIMEOUT_S = 30.0
# after every stream has an event: past the rest the service's fan-out rounds take after a
# round (at most MAX_REST_S), so that each event meets an idle service
PAUSE_S = MAX_REST_S + 0.05
SETTLE_S = 1.0  # after start, before the memory at rest is read

Message = tuple[str, object]  # what a reader process tells the parent: a kind and a payload


class _Fan:
    """The streams of one reader process: when each saw each event, and who has seen what."""

    def __init__(self, streams: int, events: int, pipe: Pipe) -> None:
        self.streams = streams
        self.pipe = pipe
        self.seen_at: list[list[float]] = [[] for _ in range(events)]  # monotonic s, by event
        self.subscribed = 0
        self.failed = False
        # every stream reads into this one buffer: what it reads is handled before the next
        # read, and a plain Protocol's reads would each allocate (and map) 256 KiB
        self.buffer = bytearray(READ_SIZE)
        self.all_subscribed = asyncio.get_running_loop().create_future()
        self.all_seen = asyncio.get_running_loop().create_future()

    def on_subscribed(self) -> None:
        self.subscribed += 1
        if self.subscribed == self.streams:
            self.all_subscribed.set_result(None)

    def on_seen(self, event: int, seen_at: float) -> None:
        times = self.seen_at[event]
        times.append(seen_at)
        if len(times) == self.streams:
            self.pipe.send(("seen", event))
            if event == len(self.seen_at) - 1:
                self.all_seen.set_result(None)

    def on_failure(self, why: str) -> None:
        # on the one being awaited only, once: the reader stops at the first failure, and
        # an exception no one awaits is logged as never retrieved
        waiting = self.all_seen if self.all_subscribed.done() else self.all_subscribed
        if not waiting.done() and not self.failed:
            waiting.set_exception(BenchError(why))
        self.failed = True


class _Stream(asyncio.BufferedProtocol):
    """One ``GET /events`` (HTTP/1.0: the body is the stream as sent, with no chunk framing to
    cut a mark in two): subscribed once its headers, ``retry:`` and position have come."""

    def __init__(self, fan: _Fan, host: str) -> None:
        self._fan = fan
        self._request = f"GET /events HTTP/1.0\r\nHost: {host}\r\n\r\n".encode()
        self._head: bytes | None = b""  # None once subscribed
        self._tail = b""
        self._seen = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(self._request)

    def get_buffer(self, sizehint: int) -> bytearray:
        return self._fan.buffer

    def buffer_updated(self, nbytes: int) -> None:
        seen_at = time.monotonic()  # first: the chunk's arrival, before any work on it
        data = bytes(memoryview(self._fan.buffer)[:nbytes])  # one copy, of what was read
        if self._head is not None:
            data = self._subscribe(self._head + data)
        # a mark may straddle two chunks: the last one's tail, shorter than a mark (so never
        # holding a whole one counted already), is joined to this one
        data = self._tail + data
        self._tail = data[1 - len(MARK) :]
        for _ in range(data.count(MARK)):
            self._fan.on_seen(self._seen, seen_at)
            self._seen += 1

    def _subscribe(self, head: bytes) -> bytes:
        """What follows the position message, once it has come; until then, b""."""
        self._head = head
        body_at = head.find(b"\r\n\r\n") + 4
        if body_at < 4:
            return b""
        if head[9:12] != b"200":
            status_line = head[: head.find(b"\r\n")].decode(errors="replace")
            self._fan.on_failure(f"GET /events answered {status_line!r}")
            return b""
        retry_end = head.find(b"\n\n", body_at) + 2
        position_end = head.find(b"\n\n", retry_end) + 2 if retry_end >= 2 else 1
        if position_end < 2:
            return b""
        self._head = None
        self._fan.on_subscribed()
        return head[position_end:]

    def connection_lost(self, exc: Exception | None) -> None:
        self._fan.on_failure(f"the service closed an event stream ({exc!r})")


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def read_streams(url: str, streams: int, events: int, pipe: Pipe) -> None:
    """A reader process: open ``streams`` streams, say when all are subscribed, note when each
    sees each of ``events`` events, then send those times and the CPU spent reading them."""
    try:
        asyncio.run(_read_streams(url, streams, events, pipe))
    except (BenchError, OSError) as exc:
        with contextlib.suppress(OSError):  # the parent has gone already: no one to tell
            pipe.send(("failed", str(exc) or repr(exc)))


async def _read_streams(url: str, streams: int, events: int, pipe: Pipe) -> None:
    fan = _Fan(streams, events, pipe)
    target = Connection.to(url)
    loop = asyncio.get_running_loop()
    opened: list[asyncio.BaseTransport] = []
    try:
        for first in range(0, streams, OPEN_AT_ONCE):
            batch = range(first, min(first + OPEN_AT_ONCE, streams))
            made = await asyncio.gather(*(
                loop.create_connection(lambda: _Stream(fan, target.host), target.host, target.port)
                for _ in batch
            ))  # fmt: skip
            opened.extend(transport for transport, _ in made)
        await fan.all_subscribed
        pipe.send(("subscribed", None))
        cpu_before_s = _cpu_s()
        await fan.all_seen
        pipe.send(("done", (fan.seen_at, _cpu_s() - cpu_before_s)))
    finally:
        for transport in opened:
            transport.close()


class _Readers:
    """The reader processes, started and stopped by the parent, and what they say."""

    def __init__(self, url: str, subscribers: int, events: int) -> None:
        count = max(1, min(READER_PROCESSES, subscribers))
        shares = [subscribers // count + (n < subscribers % count) for n in range(count)]
        spawn = multiprocessing.get_context("spawn")  # not forked from a running loop
        self._pipes: list[Pipe] = []  # the parent's ends
        self._sends: list[Pipe] = []  # the children's ends, closed here once they start
        self._processes: list[multiprocessing.process.BaseProcess] = []
        for share in shares:
            receive, send = spawn.Pipe(duplex=False)
            process = spawn.Process(target=read_streams, args=(url, share, events, send))
            process.daemon = True
            self._pipes.append(receive)
            self._sends.append(send)
            self._processes.append(process)
        self._inbox: asyncio.Queue[tuple[int, Message]] = asyncio.Queue()
        self._early: list[list[Message]] = [[] for _ in shares]  # said ahead of the others
        self._done = [False for _ in shares]  # said its last: its exit is no failure

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for index, (process, send) in enumerate(zip(self._processes, self._sends, strict=True)):
            process.start()
            send.close()  # the child's only: its exit is then an EOF here
            loop.add_reader(self._pipes[index].fileno(), self._on_message, index)

    def _on_message(self, index: int) -> None:
        pipe = self._pipes[index]
        try:
            message: Message = pipe.recv()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(pipe.fileno())
            if self._done[index]:
                return  # its last word said: it ends
            message = ("failed", f"reader process {index} exited")
        self._done[index] = message[0] in ("done", "failed")
        self._inbox.put_nowait((index, message))

    async def each(self, kind: str, payload: object, timeout_s: float, what: str) -> list[object]:
        """The next message of every reader process, each ``kind`` (and ``payload``, unless
        None): their payloads, in process order; BenchError on a failure or timeout."""
        payloads: dict[int, object] = {}
        try:
            async with asyncio.timeout(timeout_s):
                while len(payloads) < len(self._processes):
                    index, (got, got_payload) = await self._next(payloads)
                    if got != kind or (payload is not None and got_payload != payload):
                        raise BenchError(f"reader process {index}: {got} {got_payload!r:.300}")
                    payloads[index] = got_payload
        except TimeoutError:
            raise BenchError(f"timed out after {timeout_s:g} s waiting for {what}") from None
        return [payloads[index] for index in range(len(self._processes))]

    async def _next(self, answered: dict[int, object]) -> tuple[int, Message]:
        """The next message of a process not in ``answered``. One that has answered may have
        said more already (its next event seen, before the others have seen this one): that
        is kept for the next call. A failure is never kept back."""
        for index in range(len(self._processes)):
            if index not in answered and self._early[index]:
                return index, self._early[index].pop(0)
        while True:
            index, message = await self._inbox.get()
            if index not in answered or message[0] == "failed":
                return index, message
            self._early[index].append(message)

    def stop(self) -> None:
        loop = asyncio.get_running_loop()
        for pipe in self._pipes:
            if not pipe.closed:
                loop.remove_reader(pipe.fileno())
                pipe.close()
        for process in self._processes:
            if process.is_alive():
                process.terminate()
            if process.pid is not None:
                process.join(5)


async def fan_out(workdir: Path, plan: Plan) -> dict[str, float]:
    """``plan.subscribers`` streams of every job's events open; ``plan.fan_events`` held jobs
    submitted one at a time, each making one event: submit → read by each stream (ms), the
    service's memory for the open streams (MiB), and the readers' CPU an event delivered."""
    from .figures import running

    subscribers, events = plan.subscribers, plan.fan_events
    async with running(workdir / "fanout") as service:
        await asyncio.sleep(SETTLE_S)  # started, settled: memory at rest
        rss_before_kb = proc_status_kb(service.pid, "VmRSS") or 0
        readers = _Readers(service.url, subscribers, events)
        try:
            readers.start()
            await readers.each("subscribed", None, SUBSCRIBE_TIMEOUT_S, "streams to subscribe")
            rss_open_kb = proc_status_kb(service.pid, "VmRSS") or 0
            service_cpu_s = proc_cpu_s(service.pid) or 0.0
            submitted_at = await _submit_each(service.url, readers, events)
            # the pauses between events are idle: what the service spent is the fan-out's
            service_cpu_s = (proc_cpu_s(service.pid) or 0.0) - service_cpu_s
            # memory with the streams open, also after they have written: the larger
            rss_open_kb = max(rss_open_kb, proc_status_kb(service.pid, "VmRSS") or 0)
            done = await readers.each("done", None, EVENT_TIMEOUT_S, "the readers' times")
        finally:
            readers.stop()
    figures = _latencies(done, submitted_at)
    figures["fanout_rss"] = (rss_open_kb - rss_before_kb) / 1024
    cpu_s = sum(float(cpu) for _, cpu in (_times_and_cpu(payload) for payload in done))
    figures["fanout_client_cpu_us"] = cpu_s / (subscribers * events) * 1e6
    figures["fanout_service_cpu_us"] = service_cpu_s / (subscribers * events) * 1e6
    return figures


async def _submit_each(url: str, readers: _Readers, events: int) -> list[float]:
    """Submit ``events`` held jobs, each once every stream has the last one's event; the
    monotonic time each was submitted at."""
    submitted_at: list[float] = []
    async with Connection.to(url) as connection:
        for event in range(events):
            submitted_at.append(time.monotonic())
            await connection.json(
                "POST", "/jobs", {"task": NOOP, "delay_s": HELD_S}, expect=(200, 201, 202)
            )
            what = f"every stream to see event {event + 1}"
            await readers.each("seen", event, EVENT_TIMEOUT_S, what)
            await asyncio.sleep(PAUSE_S)
    return submitted_at


def _times_and_cpu(payload: object) -> tuple[list[list[float]], float]:
    assert isinstance(payload, tuple)
    seen_at, cpu_s = payload
    return seen_at, cpu_s


def _latencies(done: list[object], submitted_at: list[float]) -> dict[str, float]:
    """p50, p99 and max (ms) of submit → read, over every stream and every event."""
    latencies_ms = [
        (seen_at - submitted_at[event]) * 1000
        for payload in done
        for event, times in enumerate(_times_and_cpu(payload)[0])
        for seen_at in times
    ]
    return {
        "fanout_p50": percentile(latencies_ms, 50),
        "fanout_p99": percentile(latencies_ms, 99),
        "fanout_max": max(latencies_ms),
    }

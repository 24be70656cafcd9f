"""In-process fan-out of job events to stream subscribers, and their SSE encoding.

Every event is encoded once, whatever the number of streams; a stream too far behind is cut
loose instead of holding up everyone else, and catches up from the database: it loses nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import orjson

from .jobs import Event, isoformat

SUBSCRIBER_QUEUE_SIZE = 1000  # events a stream of one job may be behind before it is cut loose
# events a stream of every job may be behind: they share one history, so it costs the same
# however many streams are open, and a burst (a batch of submits) leaves none of them behind
HISTORY_SIZE = 10_000
# events a stream writes at once at most (one write a round): few writes under load, yet each
# small enough that a client slow to read holds only so much in the server's send buffer
WRITE_BATCH = 64
# streams woken at once: the loop runs this many streams' writes, then whatever else is ready
# (a request, a commit) before the next ones, so a thousand streams taking an event hold up no
# one for more than a slice of them
WAKE_SLICE = 16
# the longest rest between two rounds: a round that took longer (a loop overloaded by other
# work) does not keep a stream's next event back for as long again
MAX_REST_S = 0.25

Item = tuple[Event, bytes]  # an event with its SSE message, encoded once for every stream


class Subscription:
    """The live events of one stream: every job's (read from the broker's shared history, at
    the stream's own pace), or just ``job_id``'s (queued for it alone: a job has few)."""

    def __init__(self, broker: Broker, job_id: str | None, maxsize: int) -> None:
        self.job_id = job_id
        self.overflowed = False
        self.closed = False
        self.detached = False  # unsubscribed: it reads nothing more
        self._broker = broker
        self._maxsize = maxsize
        self._next = broker.published  # every job's: the index in the history it reads next
        # one job's: unbounded underneath, bounded by offer(), so that close() gets through
        self._queue: asyncio.Queue[Item | None] = asyncio.Queue()

    def offer(self, event: Event, message: bytes) -> bool:
        """Queue one job's ``event``; False (and the subscription is spent) when it is full."""
        if self._queue.qsize() >= self._maxsize:
            self.overflowed = True
            return False
        self._queue.put_nowait((event, message))
        return True

    def close(self) -> None:
        """End the stream: ``get`` returns None at once, and ``closed`` says why."""
        self.closed = True
        self._queue.put_nowait(None)

    async def get(self, timeout_s: float) -> Event | None:
        """The next event, or None after ``timeout_s`` of silence, once overflowed (what was
        missed is in the store), or once closed."""
        item = await self.get_message(timeout_s)
        return None if item is None else item[0]

    async def get_message(self, timeout_s: float) -> Item | None:
        """The next event with its SSE message (as ``get``).

        A stream of every job reads on its turn in the broker's rounds only, also when its next
        event is there already: between two of its writes, every other stream that had
        something to write has written, and the loop has run whatever else was ready.
        """
        if self.job_id is not None:
            ready = self.take_ready(1)
            if ready:
                return ready[0]
        if self.closed or self.overflowed or self.detached:
            return None
        try:
            # not wait_for: on 3.11 it can swallow the cancellation that ends a stream whose
            # client has gone (CPython gh-86296), leaving the stream running for ever
            async with asyncio.timeout(timeout_s):
                if self.job_id is not None:
                    return await self._queue.get()
                await self._broker.wait_turn(self._next)
        except TimeoutError:
            return None
        ready = self.take_ready(1)
        return ready[0] if ready else None

    def take_ready(self, most: int = WRITE_BATCH) -> list[Item]:
        """Up to ``most`` events already there, without waiting (a close stays for ``get``)."""
        if self.job_id is None:
            if self.closed or self.detached:
                return []
            taken = self._broker.history_from(self._next, most)
            if taken is None:  # fell out of the history: what it missed is in the store
                self.overflowed = True
                return []
            self._next += len(taken)
            return taken
        ready: list[Item] = []
        while len(ready) < most and not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None:
                self._queue.put_nowait(None)  # for the next get: the stream ends there
                break
            ready.append(item)
        return ready


class Broker:
    """Hands each committed event to the streams that want it.

    An event is encoded once and kept in one shared history; the streams of every job read it
    from there when they run, so publishing costs the same however many are open. The streams
    of one job get it on their own queue, found by the job's id. A stream more than ``maxsize``
    (one job's) or ``history_size`` (every job's) events behind is cut loose; it then catches up
    from the store, so it loses nothing.
    """

    def __init__(
        self, maxsize: int = SUBSCRIBER_QUEUE_SIZE, history_size: int = HISTORY_SIZE
    ) -> None:
        self._maxsize = maxsize
        self._history_size = history_size
        # a list, not a deque: a stream takes its slice from anywhere in it in O(slice), where
        # a deque walks from an end. Trimmed to the newest ``history_size`` once twice as long.
        self._history: list[Item] = []
        self._base = 0  # the index of _history[0] among every event published
        self.published = 0  # events appended to the history so far: the next one's index
        self._everything: set[Subscription] = set()
        self._by_job: dict[str, set[Subscription]] = {}
        self._rounds = _Rounds()  # wakes the streams waiting for more history
        self._closed = False

    def subscribe(self, job_id: str | None = None) -> Subscription:
        subscription = Subscription(self, job_id, self._maxsize)
        if self._closed:
            subscription.close()
        elif job_id is None:
            self._everything.add(subscription)
        else:
            self._by_job.setdefault(job_id, set()).add(subscription)
        return subscription

    def close(self) -> None:
        """End every stream, now and from now on (the service is stopping)."""
        self._closed = True
        for subscription in self._all():
            subscription.close()
        self._everything.clear()
        self._by_job.clear()
        self._rounds.wake_all()

    def unsubscribe(self, subscription: Subscription) -> None:
        subscription.detached = True
        if subscription.job_id is None:
            self._everything.discard(subscription)
            return
        streams = self._by_job.get(subscription.job_id)
        if streams is not None:
            streams.discard(subscription)
            if not streams:
                del self._by_job[subscription.job_id]

    @property
    def subscriber_count(self) -> int:
        return len(self._everything) + sum(len(s) for s in self._by_job.values())

    def publish(self, events: Iterable[Event]) -> None:
        """Hand committed events, in id order, to every interested subscriber; never blocks.

        Each event is encoded once; the cost is per event (and per stream of its own job), not
        per open stream.
        """
        added = False
        for event in events:
            mine = self._by_job.get(event.job_id)
            if not self._everything and not mine:
                continue
            message = encode_event(event)
            if self._everything:
                self._history.append((event, message))
                self.published += 1
                added = True
                if len(self._history) >= 2 * self._history_size:
                    trimmed = len(self._history) - self._history_size
                    del self._history[:trimmed]
                    self._base += trimmed
            for subscription in list(mine or ()):
                if not subscription.offer(event, message):
                    self.unsubscribe(subscription)
        if added:
            oldest = self._oldest
            for subscription in list(self._everything):  # once a commit, not once an event
                if subscription._next < oldest:
                    subscription.overflowed = True
                    self._everything.discard(subscription)
            self._rounds.wake()

    @property
    def _oldest(self) -> int:
        """The index of the oldest event a stream may still read: ``history_size`` back."""
        return max(self._base, self.published - self._history_size)

    def history_from(self, index: int, most: int) -> list[Item] | None:
        """Up to ``most`` events from the ``index``-th on; None if those are gone already."""
        if index < self._oldest:
            return None
        start = index - self._base
        return self._history[start : start + most]

    async def wait_turn(self, index: int) -> None:
        """Until a round wakes this stream once the history has its ``index``-th event (or the
        broker closes)."""
        while not self._closed:
            await self._rounds.next(due=self.published > index)
            if self.published > index:
                return

    def _all(self) -> list[Subscription]:
        return [*self._everything, *(s for streams in self._by_job.values() for s in streams)]


class _Rounds:
    """Wakes the streams of every job in rounds, so that fan-out never takes the whole loop.

    A round wakes every stream waiting at its start, a slice (``WAKE_SLICE``) at a time: the
    loop runs what else is ready between slices. A stream that has written waits for the next
    round, which starts once this one is over and as long again has passed: with a thousand
    streams under a steady flow of events, they write in batches at most half the time, and a
    request or a commit waits for a slice, not for all of them. An idle service starts a round
    at once.
    """

    def __init__(self) -> None:
        self._waiting: list[asyncio.Future[None]] = []  # streams waiting for the next round
        self._busy = False  # a round, or the rest after it, is under way
        self._due = False  # something to wake for came meanwhile

    async def next(self, *, due: bool) -> None:
        """Until the next round wakes this stream; ``due``: it has something to write, so a
        round must come (else one comes when something is published)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        if due:
            self.wake()
        await waiter  # a stream that leaves meanwhile cancels it: the round skips it

    def wake(self) -> None:
        """Something new for the waiting streams: a round soon, or once the current one ends.

        Soon, not now: every stream that asks for its turn meanwhile (in this pass of the
        loop) is in it, and none runs ahead before the others have asked."""
        if self._busy:
            self._due = True
        else:
            self._busy = True
            asyncio.get_running_loop().call_soon(self._start)

    def wake_all(self) -> None:
        """Wake every waiting stream at once (the service is stopping)."""
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            if not waiter.done():
                waiter.set_result(None)

    def _start(self) -> None:
        self._due = False
        waiting, self._waiting = self._waiting, []
        if not waiting:
            self._busy = False
            return
        loop = asyncio.get_running_loop()
        self._slice(loop, waiting, 0, loop.time())

    def _slice(
        self, loop: asyncio.AbstractEventLoop, waiting: list[asyncio.Future[None]],
        start: int, started: float,
    ) -> None:  # fmt: skip
        end = start + WAKE_SLICE
        for waiter in waiting[start:end]:
            if not waiter.done():
                waiter.set_result(None)
        # call_soon queues the next step behind the streams just woken and the I/O polled
        if end < len(waiting):
            loop.call_soon(self._slice, loop, waiting, end, started)
        else:
            loop.call_soon(self._rest, loop, started)

    def _rest(self, loop: asyncio.AbstractEventLoop, started: float) -> None:
        """The round is over (its last streams have written): rest as long as it took."""
        loop.call_later(min(loop.time() - started, MAX_REST_S), self._rested)

    def _rested(self) -> None:
        self._busy = False
        if self._due:
            self.wake()


def event_payload(event: Event) -> dict[str, object]:
    return {**event.data, "job_id": event.job_id, "at": isoformat(event.at)}


def encode_event(event: Event) -> bytes:
    """One SSE message: ``id:``, ``event:`` and a single-line JSON ``data:``."""
    data = orjson.dumps(event_payload(event))  # JSON escapes newlines: one data line suffices
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.id, event.kind.encode(), data)


def position(event_id: int) -> bytes:
    """Where a stream starts: an ``id`` with empty data, sent first.

    A client that sees no event before the connection drops still resumes from here (the
    browser sends it back as Last-Event-ID), so what happens while it is cut off is not lost.
    EventSource hands it to ``onmessage`` with empty data; other clients skip empty data.
    """
    return b"id: %d\ndata:\n\n" % event_id


KEEPALIVE = b": keep-alive\n\n"
RETRY = b"retry: 2000\n\n"

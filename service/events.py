"""In-process fan-out of job events to stream subscribers, and their SSE encoding.

Every event is encoded once, whatever the number of streams; a stream too far behind is cut
loose instead of holding up everyone else, and catches up from the database: it loses nothing.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Iterable

import orjson

from .jobs import Event, isoformat

SUBSCRIBER_QUEUE_SIZE = 1000  # events a subscriber may be behind before it is cut loose
# events a stream writes at once at most: few writes under load, yet each small enough that a
# client slow to read holds only so much in the server's send buffer
WRITE_BATCH = 64

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
        """The next event with its SSE message (as ``get``)."""
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
                await self._broker.wait_for_more(self._next)
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
    events behind is cut loose; it then catches up from the store, so it loses nothing.
    """

    def __init__(self, maxsize: int = SUBSCRIBER_QUEUE_SIZE) -> None:
        self._maxsize = maxsize
        self._history: deque[Item] = deque(maxlen=maxsize)
        self.published = 0  # events appended to the history so far: the next one's index
        self._everything: set[Subscription] = set()
        self._by_job: dict[str, set[Subscription]] = {}
        self._more = asyncio.Event()  # set, and replaced, at each publish that adds history
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
        self._wake()

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
            for subscription in list(mine or ()):
                if not subscription.offer(event, message):
                    self.unsubscribe(subscription)
        if added:
            oldest = self.published - len(self._history)
            for subscription in list(self._everything):  # once a commit, not once an event
                if subscription._next < oldest:
                    subscription.overflowed = True
                    self._everything.discard(subscription)
            self._wake()

    def history_from(self, index: int, most: int) -> list[Item] | None:
        """Up to ``most`` events from the ``index``-th on; None if those are gone already."""
        oldest = self.published - len(self._history)
        if index < oldest:
            return None
        return list(itertools.islice(self._history, index - oldest, index - oldest + most))

    async def wait_for_more(self, index: int) -> None:
        """Until the history has the ``index``-th event, or the broker closes."""
        while self.published <= index and not self._closed:
            await self._more.wait()

    def _wake(self) -> None:
        self._more.set()
        self._more = asyncio.Event()

    def _all(self) -> list[Subscription]:
        return [*self._everything, *(s for streams in self._by_job.values() for s in streams)]


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

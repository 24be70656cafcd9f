"""In-process fan-out of job events to stream subscribers, and their SSE encoding.

Each subscriber has a bounded queue: a client too slow to keep up is cut loose instead of
holding up everyone else; it then catches up from the database, so it loses nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import orjson

from .jobs import Event, isoformat

SUBSCRIBER_QUEUE_SIZE = 1000


class Subscription:
    """The live events of one stream: every job's, or just ``job_id``'s."""

    def __init__(self, job_id: str | None, maxsize: int) -> None:
        self.job_id = job_id
        self.overflowed = False
        self.closed = False
        self._maxsize = maxsize
        # unbounded underneath, bounded by offer(): close() can always get through. Each item
        # is the event with its SSE message, encoded once for every stream that gets it.
        self._queue: asyncio.Queue[tuple[Event, bytes] | None] = asyncio.Queue()

    def offer(self, event: Event, message: bytes) -> bool:
        """Queue ``event``; False (and the subscription is spent) when the queue is full."""
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
        """The next event, or None after ``timeout_s`` of silence, once overflowed and drained,
        or once closed."""
        item = await self.get_message(timeout_s)
        return None if item is None else item[0]

    async def get_message(self, timeout_s: float) -> tuple[Event, bytes] | None:
        """The next event with its SSE message (as ``get``)."""
        if self.closed or (self.overflowed and self._queue.empty()):
            return None
        try:
            # not wait_for: on 3.11 it can swallow the cancellation that ends a stream whose
            # client has gone (CPython gh-86296), leaving the stream running for ever
            async with asyncio.timeout(timeout_s):
                return await self._queue.get()
        except TimeoutError:
            return None


class Broker:
    """Hands each committed event to the streams that want it: those of every job, and those
    of its job (found by its id, not by asking each stream)."""

    def __init__(self, maxsize: int = SUBSCRIBER_QUEUE_SIZE) -> None:
        self._maxsize = maxsize
        self._everything: set[Subscription] = set()
        self._by_job: dict[str, set[Subscription]] = {}
        self._closed = False

    def subscribe(self, job_id: str | None = None) -> Subscription:
        subscription = Subscription(job_id, self._maxsize)
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

    def unsubscribe(self, subscription: Subscription) -> None:
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

        Each event is encoded once, however many streams get it.
        """
        for event in events:
            mine = self._by_job.get(event.job_id)
            if not self._everything and not mine:
                continue
            message = encode_event(event)
            for subscription in [*self._everything, *(mine or ())]:
                if not subscription.offer(event, message):
                    self.unsubscribe(subscription)

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

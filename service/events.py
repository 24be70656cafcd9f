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
        # unbounded underneath, bounded by offer(): close() can always get through
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()

    def offer(self, event: Event) -> bool:
        """Queue ``event``; False (and the subscription is spent) when the queue is full."""
        if self._queue.qsize() >= self._maxsize:
            self.overflowed = True
            return False
        self._queue.put_nowait(event)
        return True

    def close(self) -> None:
        """End the stream: ``get`` returns None at once, and ``closed`` says why."""
        self.closed = True
        self._queue.put_nowait(None)

    async def get(self, timeout_s: float) -> Event | None:
        """The next event, or None after ``timeout_s`` of silence, once overflowed and drained,
        or once closed."""
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
    def __init__(self, maxsize: int = SUBSCRIBER_QUEUE_SIZE) -> None:
        self._maxsize = maxsize
        self._subscriptions: set[Subscription] = set()
        self._closed = False

    def subscribe(self, job_id: str | None = None) -> Subscription:
        subscription = Subscription(job_id, self._maxsize)
        if self._closed:
            subscription.close()
        else:
            self._subscriptions.add(subscription)
        return subscription

    def close(self) -> None:
        """End every stream, now and from now on (the service is stopping)."""
        self._closed = True
        for subscription in self._subscriptions:
            subscription.close()
        self._subscriptions.clear()

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    def publish(self, events: Iterable[Event]) -> None:
        """Hand committed events, in id order, to every interested subscriber; never blocks."""
        for event in events:
            for subscription in list(self._subscriptions):
                if subscription.job_id not in (None, event.job_id):
                    continue
                if not subscription.offer(event):
                    self._subscriptions.discard(subscription)


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

"""Server-Sent Event streams: replay from the store, then live events from the broker.

A stream subscribes before it replays, so nothing falls in between; ids already sent are skipped.
A subscriber cut loose for being slow replays from the store again and carries on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from .db import Database
from .errors import TooManyStreams
from .events import KEEPALIVE, RETRY, Broker, encode_event, position
from .jobs import TERMINAL, Event

REPLAY_PAGE = 500


class StreamLimit:
    """How many event streams are open, and how many may be (``CONVEYOR_MAX_STREAMS``)."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.open = 0

    def counted(self, stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """``stream``, counted as open until it is closed; TooManyStreams at the limit."""
        if self.open >= self.most:
            raise TooManyStreams(self.most)
        self.open += 1  # checked and counted in one step of the loop: no race between them
        return _Counted(stream, self)


class _Counted:
    """A stream that gives its place back when the server closes it. Not a generator: one the
    server closes before its first message never runs its ``finally``."""

    def __init__(self, stream: AsyncIterator[bytes], limit: StreamLimit) -> None:
        self._stream = stream
        self._limit: StreamLimit | None = limit

    def __aiter__(self) -> _Counted:
        return self

    async def __anext__(self) -> bytes:
        return await self._stream.__anext__()

    async def aclose(self) -> None:
        if self._limit is not None:
            self._limit.open -= 1
            self._limit = None
        aclose = getattr(self._stream, "aclose", None)
        if aclose is not None:
            await aclose()


def ends_stream(event: Event) -> bool:
    """Whether ``event`` is a job's last: its terminal state."""
    return event.kind == "state" and event.data.get("state") in TERMINAL


async def event_stream(
    db: Database,
    broker: Broker,
    *,
    after_id: int,
    job_id: str | None = None,
    keepalive_s: float,
) -> AsyncIterator[bytes]:
    """Yield SSE messages after event ``after_id`` until the client leaves.

    With ``job_id``, only that job's events, and the stream ends after its terminal one.
    """
    yield RETRY
    yield position(after_id)
    sent = after_id
    while True:
        subscription = broker.subscribe(job_id)
        try:
            ended = False
            while True:  # replay what the store has beyond what was sent
                page = await db.events_after(sent, job_id=job_id, limit=REPLAY_PAGE)
                for event in page:
                    yield encode_event(event)
                    sent = event.id
                    # a job run again (a retry) goes on after a terminal event: the end is
                    # the terminal event nothing follows
                    ended = ends_stream(event)
                if len(page) < REPLAY_PAGE:
                    break
            if job_id is not None and ended:
                return
            while True:  # live
                live = await subscription.get_message(keepalive_s)
                if live is None:
                    if subscription.closed:
                        return  # the service is stopping; the client resumes from its id
                    if subscription.overflowed:
                        break  # too slow: catch up from the store
                    yield KEEPALIVE
                    continue
                # what else has come meanwhile goes out in the same write: under load, a
                # stream writes in a few large pieces rather than one per event
                out, sent, ended = _batch([live, *subscription.take_ready()], sent, job_id)
                if out:
                    yield out
                if ended:
                    return
        finally:
            broker.unsubscribe(subscription)


def _batch(
    live: list[tuple[Event, bytes]], sent: int, job_id: str | None
) -> tuple[bytes, int, bool]:
    """The messages of ``live`` not sent yet, as one write (each encoded once by the broker,
    for every stream); the last id sent; whether the job's stream ends with them."""
    out: list[bytes] = []
    for event, message in live:
        if event.id <= sent:
            continue
        out.append(message)
        sent = event.id
        if job_id is not None and ends_stream(event):
            return b"".join(out), sent, True
    return b"".join(out), sent, False

"""Server-Sent Event streams: replay from the store, then live events from the broker.

A stream subscribes before it replays, so nothing falls in between; ids already sent are skipped.
A subscriber cut loose for being slow replays from the store again and carries on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from .db import Store
from .errors import TooManyStreams
from .events import KEEPALIVE, RETRY, WRITE_BATCH, Broker, encode_event, position
from .jobs import TERMINAL, TERMINAL_VALUES, Event

# events read from the store at once by a stream catching up: many streams may catch up
# together (after a restart, or cut loose in a burst), each holding a page
REPLAY_PAGE = 256

log = logging.getLogger(__name__)


class StreamLimit:
    """The event streams open: how many may be (``CONVEYOR_MAX_STREAMS``), and which of them
    have a client that stopped reading (``CONVEYOR_STREAM_STALL_S``).

    A client that takes nothing holds a write of its stream once the socket's buffers are full
    (hypercorn waits for it to drain), and with it a place among the open streams, for good. One
    whose write has waited ``stall_s`` is dropped: its handler is cancelled, which closes the
    stream; the client reads what was buffered, then the end, and resumes with Last-Event-ID.
    Used as an async context manager, it looks for such streams while it is open.
    """

    def __init__(self, most: int, stall_s: float = 30.0) -> None:
        self.most = most
        self.stall_s = stall_s
        self.dropped = 0  # streams dropped for a client that stopped reading
        self._open: set[_Counted] = set()
        self._watch: asyncio.Task[None] | None = None

    @property
    def open(self) -> int:
        return len(self._open)

    def counted(self, stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """``stream``, counted as open until it is closed; TooManyStreams at the limit."""
        if len(self._open) >= self.most:
            raise TooManyStreams(self.most)
        counted = _Counted(stream, self)  # checked and counted in one step of the loop
        self._open.add(counted)
        return counted

    def drop_stalled(self, now: float) -> None:
        """Drop the streams whose current write has waited ``stall_s`` by ``now``
        (``time.monotonic()``)."""
        stalled = [s for s in self._open if s.writing_for(now) > self.stall_s]
        for stream in stalled:
            stream.drop()
        self.dropped += len(stalled)
        if stalled:
            log.warning(
                "dropped %d event stream(s) whose client took nothing for %g s",
                len(stalled), self.stall_s,
            )  # fmt: skip

    async def __aenter__(self) -> StreamLimit:
        self._watch = asyncio.get_running_loop().create_task(self._watch_stalls())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)

    async def _watch_stalls(self) -> None:
        """A look each quarter of ``stall_s`` (at most a second apart): a stalled client goes
        within 1.25 times ``stall_s``."""
        while True:
            await asyncio.sleep(min(1.0, self.stall_s / 4))
            self.drop_stalled(time.monotonic())

    def release(self, stream: _Counted) -> None:
        """``stream`` is closed: its place is free."""
        self._open.discard(stream)


class _Counted:
    """A stream that gives its place back when the server closes it, and knows how long the
    server has been writing its last message. Not a generator: one the server closes before
    its first message never runs its ``finally``."""

    def __init__(self, stream: AsyncIterator[bytes], limit: StreamLimit) -> None:
        self._stream = stream
        self._limit: StreamLimit | None = limit
        self._task: asyncio.Task[Any] | None = None  # the one that writes it: the handler's
        self._writing_since: float | None = None  # handed a message to the server, then

    def __aiter__(self) -> _Counted:
        return self

    async def __anext__(self) -> bytes:
        # asked for the next message: the last one is written
        self._writing_since = None
        if self._task is None:
            self._task = asyncio.current_task()
        message = await self._stream.__anext__()
        self._writing_since = time.monotonic()
        return message

    def writing_for(self, now: float) -> float:
        """How long the server has been writing this stream's last message; 0 if it is not."""
        return 0.0 if self._writing_since is None else now - self._writing_since

    def drop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def aclose(self) -> None:
        if self._limit is not None:
            self._limit.release(self)
            self._limit = None
        aclose = getattr(self._stream, "aclose", None)
        if aclose is not None:
            await aclose()


def ends_stream(event: Event) -> bool:
    """Whether ``event`` is a job's last: its terminal state."""
    return event.kind == "state" and event.data.get("state") in TERMINAL


async def event_stream(
    db: Store,
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
            async for out, replayed, replayed_ends in _replay(db, sent, job_id):
                yield out
                sent, ended = replayed, replayed_ends
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


async def _replay(
    db: Store, after_id: int, job_id: str | None
) -> AsyncIterator[tuple[bytes, int, bool]]:
    """What the store has after event ``after_id``, in writes of up to WRITE_BATCH events, each
    with the id of its page's last event and whether that event ends the job's stream (a job
    run again, a retry, goes on after a terminal event: the end is the one nothing follows)."""
    while True:
        page = await db.events_after(after_id, job_id=job_id, limit=REPLAY_PAGE)
        if not page:
            return
        after_id, ended, full = page[-1].id, ends_stream(page[-1]), len(page) == REPLAY_PAGE
        # encoded at once: a stream holds its page's bytes, not its events, while it writes
        messages = [encode_event(event) for event in page]
        del page
        for start in range(0, len(messages), WRITE_BATCH):
            yield b"".join(messages[start : start + WRITE_BATCH]), after_id, ended
        if not full:
            return


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


async def workflow_event_stream(
    db: Store, broker: Broker, workflow_id: str, *, after_id: int, keepalive_s: float
) -> AsyncIterator[bytes]:
    """Yield the SSE messages of a workflow's jobs after event ``after_id``; end once every
    one of its jobs has finished (a job run again on request runs the stream on too)."""
    yield RETRY
    yield position(after_id)
    sent = after_id
    while True:
        subscription = broker.subscribe()  # every job's, filtered to the workflow's own
        try:
            # after subscribing: a change from here on is both read and heard
            states = {job.id: job.state.value for job in (await db.workflow(workflow_id)).jobs}
            while page := await db.workflow_events_after(workflow_id, sent, limit=REPLAY_PAGE):
                # what the replay tells of counts too: the live events it overlaps are skipped
                out, sent = _workflow_batch([(e, encode_event(e)) for e in page], sent, states)
                yield out
            if _all_finished(states):
                return
            while True:  # live
                live = await subscription.get_message(keepalive_s)
                if live is None:
                    if subscription.closed:
                        return
                    if subscription.overflowed:
                        break  # too slow: catch up from the store
                    yield KEEPALIVE
                    continue
                out, sent = _workflow_batch([live, *subscription.take_ready()], sent, states)
                if out:
                    yield out
                if _all_finished(states):
                    return
        finally:
            broker.unsubscribe(subscription)


def _workflow_batch(
    live: list[tuple[Event, bytes]], sent: int, states: dict[str, str]
) -> tuple[bytes, int]:
    """The messages of ``live`` about the workflow's jobs (``states``, kept up to date by
    them) not sent yet, as one write; the last id sent."""
    out: list[bytes] = []
    for event, message in live:
        if event.id <= sent or event.job_id not in states:
            continue
        out.append(message)
        sent = event.id
        if event.kind == "state":
            states[event.job_id] = event.data.get("state", "")
    return b"".join(out), sent


def _all_finished(states: dict[str, str]) -> bool:
    return all(state in TERMINAL_VALUES for state in states.values())

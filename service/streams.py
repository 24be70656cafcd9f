"""Server-Sent Event streams: replay from the store, then live events from the broker.

A stream subscribes before it replays, so nothing falls in between; ids already sent are skipped.
A subscriber cut loose for being slow replays from the store again and carries on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from .db import Database
from .events import KEEPALIVE, RETRY, Broker, encode_event, position
from .jobs import TERMINAL, Event

REPLAY_PAGE = 500


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
                live = await subscription.get(keepalive_s)
                if live is None:
                    if subscription.closed:
                        return  # the service is stopping; the client resumes from its id
                    if subscription.overflowed:
                        break  # too slow: catch up from the store
                    yield KEEPALIVE
                    continue
                if live.id <= sent:
                    continue
                yield encode_event(live)
                sent = live.id
                if job_id is not None and ends_stream(live):
                    return
        finally:
            broker.unsubscribe(subscription)

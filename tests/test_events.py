"""The broker's fan-out, SSE encoding, and event streams against a real database and broker."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.events import (
    KEEPALIVE,
    RETRY,
    WAKE_SLICE,
    WRITE_BATCH,
    Broker,
    Subscription,
    encode_event,
    position,
)
from service.jobs import Event, Job, JobError, JobState, Progress, transition
from service.store.sqlite import SqliteStore
from service.streams import REPLAY_PAGE, ends_stream, event_stream

from .conftest import wait_until

AT = datetime(2026, 11, 21, 10, 49, 0, 123000, tzinfo=UTC).timestamp()


def event(event_id: int, job_id: str = "job-1", kind: str = "state", **data: Any) -> Event:
    return Event(event_id, job_id, kind, AT, {"job_id": job_id, **data})


async def drain(subscription: Subscription) -> list[int]:
    """The ids of the events waiting in ``subscription`` (waits briefly at the end)."""
    got: list[int] = []
    while (next_event := await subscription.get(0.02)) is not None:
        got.append(next_event.id)
    return got


# -- broker ----------------------------------------------------------------------------------


async def test_broker_fans_out_to_all_jobs_and_per_job_subscriptions() -> None:
    broker = Broker()
    everything, job1, job2 = (
        broker.subscribe(),
        broker.subscribe("job-1"),
        broker.subscribe("job-2"),
    )
    assert broker.subscriber_count == 3
    assert (everything.job_id, job1.job_id) == (None, "job-1")
    broker.publish([event(1, "job-1"), event(2, "job-2"), event(3, "job-3"), event(4, "job-1")])
    assert await drain(everything) == [1, 2, 3, 4]
    assert await drain(job1) == [1, 4]
    assert await drain(job2) == [2]
    broker.publish([event(5, "job-2")])
    assert await drain(everything) == [5]
    assert await drain(job1) == []
    assert await drain(job2) == [5]


async def test_an_event_is_encoded_once_for_every_stream_that_gets_it() -> None:
    broker = Broker()
    streams = [broker.subscribe() for _ in range(3)] + [broker.subscribe("job-1")]
    broker.publish([event(1)])
    messages = [await s.get_message(1) for s in streams]
    assert all(m is not None and m[1] == encode_event(event(1)) for m in messages)
    assert len({id(m[1]) for m in messages if m is not None}) == 1  # the same bytes object


async def test_a_subscriber_receives_the_event_objects_published() -> None:
    broker = Broker()
    subscription = broker.subscribe()
    published = event(1, state="queued")
    broker.publish([published])
    assert await subscription.get(1) is published


async def test_unsubscribe_stops_delivery() -> None:
    broker = Broker()
    leaving, staying = broker.subscribe(), broker.subscribe()
    broker.unsubscribe(leaving)
    assert broker.subscriber_count == 1
    broker.unsubscribe(leaving)  # twice is harmless
    assert broker.subscriber_count == 1
    broker.publish([event(1)])
    assert await drain(leaving) == []
    assert await drain(staying) == [1]
    assert not leaving.overflowed


async def test_publishing_with_no_subscribers_is_fine() -> None:
    Broker().publish([event(1), event(2)])


async def test_many_waiting_streams_are_woken_a_slice_at_a_time() -> None:
    """What becomes ready while a publish wakes a thousand streams runs after a slice of them,
    not after all: a request waits for WAKE_SLICE streams' writes, not for every stream's."""
    broker = Broker()
    order: list[str] = []

    async def stream(n: int) -> None:
        subscription = broker.subscribe()
        assert await subscription.get(5) is not None
        if not order:  # the first stream woken: a request comes in as it writes
            asyncio.get_running_loop().call_soon(order.append, "request")
        order.append(f"stream {n}")

    streams = [asyncio.create_task(stream(n)) for n in range(10 * WAKE_SLICE)]
    # a stream subscribes and starts waiting for its turn in one step
    await wait_until(lambda: broker.subscriber_count == 10 * WAKE_SLICE)
    broker.publish([event(1)])
    await asyncio.gather(*streams)
    assert len(order) == 10 * WAKE_SLICE + 1
    assert order.index("request") == WAKE_SLICE  # after the first slice, before the next


async def test_streams_with_much_to_write_take_turns() -> None:
    """A stream with more than a write's worth waiting writes one batch a turn: the others
    write theirs in between, and the last of all is not held up by the first's backlog."""
    broker = Broker()
    first, second = broker.subscribe(), broker.subscribe()
    broker.publish([event(n) for n in range(1, 3 * WRITE_BATCH + 1)])
    writes: list[tuple[str, int]] = []

    async def write(name: str, subscription: Subscription) -> None:
        while True:
            live = await subscription.get_message(0.2)
            if live is None:
                return
            batch = [live, *subscription.take_ready(WRITE_BATCH - 1)]
            writes.append((name, len(batch)))

    await asyncio.gather(write("first", first), write("second", second))
    assert writes == [("first", WRITE_BATCH), ("second", WRITE_BATCH)] * 3


async def test_get_times_out_with_none_when_idle() -> None:
    subscription = Broker().subscribe()
    assert await subscription.get(0.01) is None
    assert not subscription.overflowed


async def test_a_full_subscriber_is_dropped_while_others_keep_receiving() -> None:
    broker = Broker(maxsize=2, history_size=2)
    slow, fast = broker.subscribe(), broker.subscribe()
    broker.publish([event(1), event(2)])
    assert await drain(fast) == [1, 2]
    broker.publish([event(3)])  # slow's queue is full: it is cut loose
    assert slow.overflowed
    assert not fast.overflowed
    assert broker.subscriber_count == 1
    assert await drain(fast) == [3]
    broker.publish([event(4)])
    assert await drain(fast) == [4]
    # None at once: what it missed is in the store, where its stream catches up
    assert await asyncio.wait_for(slow.get(60), 5) is None
    assert slow.overflowed


async def test_overflow_within_one_publish_call() -> None:
    broker = Broker(maxsize=3, history_size=3)
    slow = broker.subscribe()
    broker.publish([event(n) for n in range(1, 11)])
    assert slow.overflowed and broker.subscriber_count == 0
    assert await drain(slow) == []


# -- encoding --------------------------------------------------------------------------------


def parse(message: bytes) -> tuple[int, str, dict[str, Any]]:
    match = re.fullmatch(rb"id: (\d+)\nevent: (\w+)\ndata: ([^\n]*)\n\n", message)
    assert match is not None, message
    return int(match[1]), match[2].decode(), orjson.loads(match[3])


def test_encode_event() -> None:
    encoded = encode_event(event(42, "job-9", state="running", task="t.add", attempt=1))
    assert encoded.startswith(b"id: 42\nevent: state\ndata: {")
    assert encoded.endswith(b"}\n\n")
    assert encoded.count(b"\n") == 4
    event_id, kind, data = parse(encoded)
    assert (event_id, kind) == (42, "state")
    assert data == {
        "job_id": "job-9",
        "state": "running",
        "task": "t.add",
        "attempt": 1,
        "at": "2026-11-21T10:49:00.123Z",
    }


def test_encode_event_keeps_newlines_inside_one_data_line() -> None:
    multiline = Event(7, "job-1", "progress", AT, {"progress": {"message": "a\nb\r\nc\n\nd"}})
    event_id, kind, data = parse(encode_event(multiline))
    assert (event_id, kind) == (7, "progress")
    assert data["progress"]["message"] == "a\nb\r\nc\n\nd"
    assert data["job_id"] == "job-1"  # the event's job id, even where data has none
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", data["at"])


def test_ends_stream_only_on_terminal_state_events() -> None:
    assert ends_stream(event(1, state="succeeded"))
    assert ends_stream(event(1, state="failed"))
    assert ends_stream(event(1, state="canceled"))
    assert not ends_stream(event(1, state="queued"))
    assert not ends_stream(event(1, state="running"))
    assert not ends_stream(event(1, kind="progress", progress={"done": 1}))


# -- event streams ---------------------------------------------------------------------------


def new_job(n: int) -> Job:
    return Job(
        id=f"job-{n}", task="t.add", args=[n], kwargs={}, state=JobState.QUEUED, created_at=1.0
    )


def start(job: Job) -> Job:
    return transition(job, JobState.RUNNING, 2.0)


def finish(state: JobState) -> Callable[[Job], Job]:
    def change(job: Job) -> Job:
        error = JobError("ValueError", "boom") if state is JobState.FAILED else None
        return transition(job, state, 3.0, error=error)

    return change


def report(done: float) -> Callable[[Job], Job]:
    def change(job: Job) -> Job:
        return dataclasses.replace(job, progress=Progress(done, 3))

    return change


@pytest.fixture
async def db_and_broker(tmp_path: Path) -> AsyncIterator[tuple[SqliteStore, Broker]]:
    broker = Broker()
    async with SqliteStore(str(tmp_path / "conveyor.db"), on_commit=broker.publish) as db:
        yield db, broker


@asynccontextmanager
async def open_stream(
    db: SqliteStore,
    broker: Broker,
    *,
    after_id: int,
    job_id: str | None = None,
    keepalive_s: float = 30.0,
) -> AsyncIterator[AsyncIterator[bytes]]:
    stream = event_stream(db, broker, after_id=after_id, job_id=job_id, keepalive_s=keepalive_s)
    try:
        assert await asyncio.wait_for(anext(stream), 5) == RETRY  # always first
        assert await asyncio.wait_for(anext(stream), 5) == position(after_id)  # then where
        yield stream
    finally:
        if isinstance(stream, AsyncGenerator):
            await stream.aclose()


# messages of a stream's write not handed out yet: a write may carry several
_PENDING: weakref.WeakKeyDictionary[AsyncIterator[bytes], list[bytes]] = weakref.WeakKeyDictionary()


async def next_event(stream: AsyncIterator[bytes]) -> tuple[int, str, dict[str, Any]]:
    """The stream's next event, keep-alives skipped."""
    pending = _PENDING.setdefault(stream, [])
    while True:
        if not pending:
            chunk = await asyncio.wait_for(anext(stream), 5)
            pending.extend(m + b"\n\n" for m in chunk.split(b"\n\n") if m)
        message = pending.pop(0)
        if message != KEEPALIVE:
            return parse(message)


async def next_ids(stream: AsyncIterator[bytes], count: int) -> list[int]:
    return [(await next_event(stream))[0] for _ in range(count)]


async def assert_ended(stream: AsyncIterator[bytes]) -> None:
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(stream), 5)


async def test_stream_replays_after_an_id_then_goes_live(
    db_and_broker: tuple[SqliteStore, Broker],
) -> None:
    db, broker = db_and_broker
    for n in range(1, 4):
        await db.insert(new_job(n))
    async with open_stream(db, broker, after_id=1) as stream:
        first = await asyncio.wait_for(anext(stream), 5)
        # exactly what was stored, the replayed events in one write
        assert first == b"".join(encode_event(e) for e in await db.events_after(1))
        assert [parse(m + b"\n\n")[0] for m in first.split(b"\n\n") if m] == [2, 3]
        assert broker.subscriber_count == 1
        await db.insert(new_job(4))
        await db.update("job-1", start)
        event_id, kind, data = await next_event(stream)
        assert (event_id, kind, data["job_id"], data["state"]) == (4, "state", "job-4", "queued")
        event_id, _, data = await next_event(stream)
        assert (event_id, data["job_id"], data["state"], data["attempt"]) == (
            5,
            "job-1",
            "running",
            1,
        )
    assert broker.subscriber_count == 0  # closing the stream unsubscribes it


async def test_stream_delivers_to_a_waiting_client(
    db_and_broker: tuple[SqliteStore, Broker],
) -> None:
    db, broker = db_and_broker
    await db.insert(new_job(1))
    async with open_stream(db, broker, after_id=1) as stream:
        waiting = asyncio.create_task(next_event(stream))
        await wait_until(lambda: broker.subscriber_count == 1, what="the stream to subscribe")
        await db.insert(new_job(2))
        event_id, _, data = await waiting
        assert (event_id, data["job_id"]) == (2, "job-2")


async def test_stream_from_the_last_id_starts_from_now(
    db_and_broker: tuple[SqliteStore, Broker],
) -> None:
    db, broker = db_and_broker
    await db.insert(new_job(1))
    await db.insert(new_job(2))
    async with open_stream(db, broker, after_id=db.last_event_id) as stream:
        waiting = asyncio.create_task(next_event(stream))
        await wait_until(lambda: broker.subscriber_count == 1, what="the stream to subscribe")
        await db.update("job-1", start)
        event_id, _, data = await waiting
        assert (event_id, data["job_id"], data["state"]) == (3, "job-1", "running")


async def test_stream_from_zero_replays_everything_page_by_page(
    db_and_broker: tuple[SqliteStore, Broker],
) -> None:
    db, broker = db_and_broker
    count = REPLAY_PAGE * 2 + 3  # more than one page
    await asyncio.gather(*(db.insert(new_job(n)) for n in range(count)))
    async with open_stream(db, broker, after_id=0) as stream:
        assert await next_ids(stream, count) == list(range(1, count + 1))


async def test_stream_sends_keepalives_when_idle(db_and_broker: tuple[SqliteStore, Broker]) -> None:
    db, broker = db_and_broker
    async with open_stream(db, broker, after_id=0, keepalive_s=0.01) as stream:
        assert await asyncio.wait_for(anext(stream), 5) == KEEPALIVE
        assert await asyncio.wait_for(anext(stream), 5) == KEEPALIVE
        await db.insert(new_job(1))
        assert await next_ids(stream, 1) == [1]


async def test_stream_skips_events_it_already_sent(
    db_and_broker: tuple[SqliteStore, Broker],
) -> None:
    db, broker = db_and_broker
    await db.insert(new_job(1))
    await db.insert(new_job(2))
    async with open_stream(db, broker, after_id=0) as stream:
        assert await next_ids(stream, 2) == [1, 2]
        broker.publish(await db.events_after(0))  # the same events once more
        await db.insert(new_job(3))
        assert await next_ids(stream, 1) == [3]


async def test_stream_skips_an_event_both_replayed_and_live(
    db_and_broker: tuple[SqliteStore, Broker],
) -> None:
    db, broker = db_and_broker
    await asyncio.gather(*(db.insert(new_job(n)) for n in range(REPLAY_PAGE)))
    async with open_stream(db, broker, after_id=0) as stream:
        assert await next_ids(stream, 1) == [1]  # subscribed; the first page is read
        await db.insert(new_job(REPLAY_PAGE))  # published live and read by the second page
        received = await next_ids(stream, REPLAY_PAGE)
        assert received == list(range(2, REPLAY_PAGE + 2))
        await db.insert(new_job(REPLAY_PAGE + 1))
        assert await next_ids(stream, 1) == [REPLAY_PAGE + 2]  # not the duplicate


async def test_stream_catches_up_from_the_store_after_overflow(tmp_path: Path) -> None:
    broker = Broker(maxsize=1, history_size=1)
    async with SqliteStore(str(tmp_path / "conveyor.db"), on_commit=broker.publish) as db:
        await db.insert(new_job(0))
        async with open_stream(db, broker, after_id=0) as stream:
            assert await next_ids(stream, 1) == [1]
            assert broker.subscriber_count == 1
            for n in range(1, 6):  # while the client is not reading
                await db.insert(new_job(n))
            assert broker.subscriber_count == 0  # cut loose for being slow
            assert await next_ids(stream, 5) == [2, 3, 4, 5, 6]  # nothing lost, nothing twice
            assert broker.subscriber_count == 1  # subscribed again
            await db.update("job-0", start)
            event_id, _, data = await next_event(stream)
            assert (event_id, data["job_id"], data["state"]) == (7, "job-0", "running")


async def test_job_stream_replays_that_job_and_ends_at_its_terminal_state(
    db_and_broker: tuple[SqliteStore, Broker],
) -> None:
    db, broker = db_and_broker
    await db.insert(new_job(1))
    await db.insert(new_job(2))
    await db.update("job-1", start)
    await db.update("job-2", start)
    await db.update("job-1", finish(JobState.SUCCEEDED))
    await db.update("job-2", finish(JobState.SUCCEEDED))
    async with open_stream(db, broker, after_id=0, job_id="job-1") as stream:
        got = [await next_event(stream) for _ in range(3)]
        assert [(e[0], e[2]["job_id"], e[2]["state"]) for e in got] == [
            (1, "job-1", "queued"),
            (3, "job-1", "running"),
            (5, "job-1", "succeeded"),
        ]
        await assert_ended(stream)
    assert broker.subscriber_count == 0


@pytest.mark.parametrize("terminal", [JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED])
async def test_job_stream_ends_after_a_live_terminal_event(
    db_and_broker: tuple[SqliteStore, Broker], terminal: JobState
) -> None:
    db, broker = db_and_broker
    await db.insert(new_job(1))
    await db.insert(new_job(2))
    async with open_stream(db, broker, after_id=0, job_id="job-1") as stream:
        assert (await next_event(stream))[2]["state"] == "queued"
        await db.update("job-2", start)  # another job's events are not in this stream
        await db.update("job-1", start)
        await db.update(
            "job-1",
            lambda job: dataclasses.replace(job, progress=Progress(1, 2, "half")),
            kind="progress",
        )
        await db.update("job-2", finish(JobState.SUCCEEDED))
        await db.update("job-1", finish(terminal))
        got = [await next_event(stream) for _ in range(3)]
        assert [(e[0], e[1], e[2]["job_id"]) for e in got] == [
            (4, "state", "job-1"),
            (5, "progress", "job-1"),
            (7, "state", "job-1"),
        ]
        assert got[1][2]["progress"] == {"done": 1, "total": 2, "message": "half"}
        assert got[2][2]["state"] == terminal.value
        if terminal is JobState.FAILED:
            assert got[2][2]["error"] == {"type": "ValueError", "message": "boom"}
        await assert_ended(stream)
    assert broker.subscriber_count == 0


async def test_the_all_jobs_stream_does_not_end_at_a_terminal_event(
    db_and_broker: tuple[SqliteStore, Broker],
) -> None:
    db, broker = db_and_broker
    await db.insert(new_job(1))
    await db.update("job-1", start)
    await db.update("job-1", finish(JobState.SUCCEEDED))
    async with open_stream(db, broker, after_id=0) as stream:
        assert await next_ids(stream, 3) == [1, 2, 3]
        await db.insert(new_job(2))
        assert await next_ids(stream, 1) == [4]


async def test_job_stream_catches_up_after_overflow_and_still_ends(tmp_path: Path) -> None:
    broker = Broker(maxsize=1, history_size=1)
    async with SqliteStore(str(tmp_path / "conveyor.db"), on_commit=broker.publish) as db:
        await db.insert(new_job(1))
        async with open_stream(db, broker, after_id=0, job_id="job-1") as stream:
            assert await next_ids(stream, 1) == [1]
            await db.update("job-1", start)
            for done in range(1, 4):
                await db.update("job-1", report(done), kind="progress")
            await db.update("job-1", finish(JobState.SUCCEEDED))
            assert broker.subscriber_count == 0
            assert await next_ids(stream, 5) == [2, 3, 4, 5, 6]
            await assert_ended(stream)


async def test_a_stream_cancelled_as_an_event_arrives_still_ends() -> None:
    """The client leaves just as an event wakes its stream: the cancellation must win."""
    subscription = Broker().subscribe()
    getter = asyncio.create_task(subscription.get(10))
    await asyncio.sleep(0)  # the getter waits on the queue
    queued = Event(1, "job-1", "state", 1.0, {"state": "queued"})
    subscription.offer(queued, encode_event(queued))
    getter.cancel()  # the client disconnects before the woken getter resumes
    with pytest.raises(asyncio.CancelledError):
        await getter

"""The job record's state machine: which moves are allowed and what each move records."""

from __future__ import annotations

import math
import random
import re
from datetime import UTC, datetime
from itertools import product
from typing import Any

import pytest

from service.errors import InvalidTransition
from service.jobs import (
    ACTIVE,
    TERMINAL,
    Job,
    JobError,
    JobState,
    Progress,
    interrupt,
    isoformat,
    released,
    reopened,
    state_event_data,
    transition,
)

Q, R, S, F, C = (
    JobState.QUEUED,
    JobState.RUNNING,
    JobState.SUCCEEDED,
    JobState.FAILED,
    JobState.CANCELED,
)

SCH = JobState.SCHEDULED
W = JobState.WAITING
ALLOWED = {
    (W, SCH), (W, Q), (W, C),  # its dependencies let it go, or one failed
    (SCH, Q), (SCH, C), (Q, R), (Q, C), (R, S), (R, F), (R, C), (R, Q), (R, SCH),
    (F, Q), (C, Q),  # a retry on request
    (C, W),  # a workflow's step canceled for the one before, which runs again
}  # fmt: skip
REFUSED = sorted(set(product(JobState, JobState)) - ALLOWED)


def make_job(state: JobState = Q, **changes: Any) -> Job:
    fields: dict[str, Any] = {
        "id": "job-1",
        "task": "tests.sample_tasks.add",
        "args": [1, 2],
        "kwargs": {},
        "state": state,
        "created_at": 100.0,
    }
    fields.update(changes)
    return Job(**fields)


def test_states_split_into_active_and_terminal() -> None:
    assert {W, SCH, Q, R} == ACTIVE
    assert {S, F, C} == TERMINAL
    assert not ACTIVE & TERMINAL
    assert set(JobState) == ACTIVE | TERMINAL
    assert [make_job(s).is_terminal for s in (Q, R, S, F, C)] == [False, False, True, True, True]


@pytest.mark.parametrize(("source", "target"), sorted(ALLOWED))
def test_allowed_transitions(source: JobState, target: JobState) -> None:
    job = make_job(source)
    moved = transition(job, target, 200.0)
    assert moved.state is target
    assert job.state is source  # the record is immutable: a new one is returned
    assert (moved.id, moved.task, moved.args, moved.created_at) == (
        "job-1",
        job.task,
        [1, 2],
        100.0,
    )


@pytest.mark.parametrize(("source", "target"), REFUSED)
def test_refused_transitions(source: JobState, target: JobState) -> None:
    with pytest.raises(InvalidTransition) as caught:
        transition(make_job(source), target, 200.0)
    assert (caught.value.job_id, caught.value.current, caught.value.target) == (
        "job-1",
        source,
        target,
    )
    why = {
        JobState.CANCELED: "it cannot be canceled",
        JobState.QUEUED: "only a failed or canceled job can be retried",
    }.get(target, f"it cannot become {target}")
    assert str(caught.value) == f"job job-1 is {source}; {why}"
    assert caught.value.job is not None and caught.value.job.state is source


def test_every_pair_is_either_allowed_or_refused() -> None:
    assert len(ALLOWED) + len(REFUSED) == len(JobState) ** 2
    # a finished job moves again only when a retry is asked for: back to the queue (or, a
    # step canceled for the step before it, to waiting, when that one is retried)
    assert all(s in ACTIVE or t is Q or (s, t) == (C, W) for s, t in ALLOWED)
    assert not any(s is S for s, _ in ALLOWED)  # success is for good


def test_starting_sets_started_at_and_counts_the_attempt() -> None:
    running = transition(make_job(Q), R, 200.0)
    assert (running.started_at, running.finished_at, running.attempt) == (200.0, None, 1)
    assert running.duration_s is None
    requeued = transition(running, Q, 250.0)
    again = transition(requeued, R, 300.0)
    assert (again.started_at, again.finished_at, again.attempt) == (300.0, None, 2)


@pytest.mark.parametrize("target", [S, F, C])
def test_finishing_sets_finished_at(target: JobState) -> None:
    running = transition(make_job(Q), R, 200.0)
    done = transition(running, target, 201.5)
    assert (done.started_at, done.finished_at, done.attempt) == (200.0, 201.5, 1)
    assert done.duration_s == 1.5
    assert done.is_terminal


def test_canceling_a_queued_job_finishes_it_without_starting_it() -> None:
    canceled = transition(make_job(Q), C, 200.0)
    assert (canceled.started_at, canceled.finished_at, canceled.attempt) == (None, 200.0, 0)
    assert canceled.duration_s is None


def test_explicit_changes_win_over_the_defaults() -> None:
    running = transition(make_job(Q), R, 200.0, started_at=150.0, attempt=7)
    assert (running.started_at, running.attempt) == (150.0, 7)
    error = JobError("ValueError", "boom", "Traceback ...")
    failed = transition(running, F, 210.0, error=error, finished_at=205.0)
    assert (failed.error, failed.finished_at) == (error, 205.0)
    succeeded = transition(transition(make_job(Q), R, 1.0), S, 2.0, result={"n": 1})
    assert succeeded.result == {"n": 1}


def test_requeueing_clears_progress_but_keeps_the_attempt_count() -> None:
    running = transition(make_job(Q), R, 200.0, progress=Progress(3, 10, "three"))
    assert running.progress == Progress(3, 10, "three")
    requeued = transition(running, Q, 210.0)
    assert requeued.progress is None
    assert requeued.attempt == 1
    assert requeued.finished_at is None


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(TypeError):
        transition(make_job(Q), R, 200.0, no_such_field=1)


def test_interrupt_requeues_and_counts() -> None:
    running = transition(make_job(Q), R, 200.0, progress=Progress(1))
    once = interrupt(running, 210.0, max_interruptions=3)
    assert (once.state, once.interruptions, once.attempt, once.error) == (Q, 1, 1, None)
    assert once.progress is None
    twice = interrupt(transition(once, R, 220.0), 230.0, max_interruptions=3)
    assert (twice.state, twice.interruptions, twice.attempt) == (Q, 2, 2)


def test_interrupt_fails_the_job_once_interruptions_exceed_the_maximum() -> None:
    job = transition(make_job(Q, interruptions=2), R, 200.0)
    third = interrupt(job, 210.0, max_interruptions=3)
    assert (third.state, third.interruptions) == (Q, 3)  # equal to the maximum: still runs
    fourth = interrupt(transition(third, R, 220.0), 230.0, max_interruptions=3)
    assert (fourth.state, fourth.interruptions, fourth.finished_at) == (F, 4, 230.0)
    assert fourth.error is not None
    assert fourth.error.type == "Interrupted"
    assert "4 times" in fourth.error.message
    assert "CONVEYOR_MAX_INTERRUPTIONS is 3" in fourth.error.message


def test_interrupt_with_zero_allowed_fails_at_once() -> None:
    failed = interrupt(transition(make_job(Q), R, 200.0), 201.0, max_interruptions=0)
    assert failed.state is F
    assert failed.error is not None and failed.error.type == "Interrupted"


def test_interrupt_only_applies_to_running_jobs() -> None:
    with pytest.raises(InvalidTransition):
        interrupt(make_job(S), 200.0, max_interruptions=3)


def test_isoformat_is_utc_with_milliseconds_and_z() -> None:
    epoch = datetime(2026, 11, 21, 10, 49, 0, 123000, tzinfo=UTC).timestamp()
    assert isoformat(epoch) == "2026-11-21T10:49:00.123Z"
    assert isoformat(0) == "1970-01-01T00:00:00.000Z"
    assert isoformat(None) is None
    text = isoformat(1_763_722_140.5)
    assert text is not None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", text)
    assert text.endswith(":00.500Z")


def test_isoformat_says_what_datetime_says_to_the_millisecond() -> None:
    """Written by hand for speed, it must match ``datetime.isoformat`` everywhere: before 1970,
    at a second's edge (a time that rounds up to the next second), and at ISO-8601's own ends,
    to which times beyond them (and NaN, the infinities) are clamped."""
    rng = random.Random(13)
    earliest = datetime(1, 1, 1, tzinfo=UTC).timestamp()
    latest = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC).timestamp()
    times = [rng.uniform(-5e10, 2.5e11) for _ in range(2000)]
    times += [1_763_722_139.9999996, -0.0000004, -1.5, 0.0009999, earliest, latest]
    for epoch_s in times:
        expected = datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")
        assert isoformat(epoch_s) == expected.replace("+00:00", "Z"), epoch_s
    assert isoformat(earliest - 1e9) == "0001-01-01T00:00:00.000Z"
    assert isoformat(latest + 1e9) == isoformat(math.inf) == isoformat(-math.inf)
    assert isoformat(math.nan) == isoformat(latest)


def test_state_event_data() -> None:
    job = transition(make_job(Q), R, 200.0)
    assert state_event_data(job, Q) == {
        "job_id": "job-1",
        "task": "tests.sample_tasks.add",
        "queue": "default",
        "from": "queued",
        "state": "running",
        "attempt": 1,
    }
    failed = transition(job, F, 201.0, error=JobError("ValueError", "boom", "Traceback ..."))
    data = state_event_data(failed, R)
    assert (data["from"], data["state"]) == ("running", "failed")
    assert data["error"] == {"type": "ValueError", "message": "boom"}  # no traceback
    assert isinstance(data["state"], str)


def test_progress_and_error_as_dict() -> None:
    assert Progress(1.5).as_dict() == {"done": 1.5, "total": None, "message": None}
    assert Progress(2, 4, "half").as_dict() == {"done": 2, "total": 4, "message": "half"}
    assert JobError("E", "m").as_dict() == {"type": "E", "message": "m", "traceback": None}


# -- a waiting job let go by its dependencies ---------------------------------------------------


def _waiting(**changes: Any) -> Job:
    return make_job(W, depends_on=("a", "b"), waiting_on=2, **changes)


def test_a_waiting_job_waits_until_none_of_its_dependencies_is_left() -> None:
    one_left = released(_waiting(), None, 1, 200.0)
    assert one_left.state is W and one_left.waiting_on == 1
    due = released(one_left, None, 0, 200.0)
    assert due.state is Q and due.error is None and due.waiting_on == 0


def test_one_failed_dependency_cancels_it_at_once_naming_that_job() -> None:
    canceled = released(_waiting(), make_job(F, id="a"), 1, 200.0)
    assert canceled.state is C and canceled.finished_at == 200.0
    assert canceled.error is not None and canceled.error.type == "dependency_failed"
    assert "job a" in canceled.error.message and "failed" in canceled.error.message


def test_run_anyway_waits_for_all_then_runs_after_a_failure() -> None:
    job = _waiting(on_dependency_failure="run")
    still = released(job, make_job(C, id="a"), 1, 200.0)
    assert still.state is W
    assert released(still, None, 0, 200.0).state is Q


def test_a_later_start_is_kept_and_a_past_one_dropped() -> None:
    later = released(_waiting(scheduled_at=500.0), None, 0, 200.0)
    assert later.state is SCH and later.scheduled_at == 500.0
    past = released(_waiting(scheduled_at=150.0), None, 0, 200.0)
    assert past.state is Q and past.scheduled_at is None


def test_a_step_canceled_for_the_one_before_waits_again_when_that_one_reruns() -> None:
    error = JobError("dependency_failed", "job a it depends on failed")
    canceled = make_job(C, depends_on=("a",), error=error, finished_at=150.0)
    again = reopened(canceled, "a", 1, 200.0)
    assert again is not None and again.state is W and again.waiting_on == 1
    assert again.error is None and again.finished_at is None
    assert reopened(canceled, "b", 1, 200.0) is None  # canceled for another job
    by_hand = make_job(C, depends_on=("a",))
    assert reopened(by_hand, "a", 1, 200.0) is None  # canceled on request: it stays

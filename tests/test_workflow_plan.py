"""How a workflow's steps are laid out as jobs: what each waits for and what input it takes."""

from __future__ import annotations

import itertools

from service.jobs import Job, JobSpec, JobState
from service.workflows import Chain, Group, Step, plan, resolve, workflow_state


def step(name: str, pass_result: bool = True) -> Step:
    return Step(JobSpec(name), pass_result)


def laid_out(node: Chain | Group) -> list[tuple[str, str, tuple[str, ...], object]]:
    counter = itertools.count(1)
    made = plan(node, "w", lambda: f"j{next(counter)}")
    return [(p.job_id, p.spec.task, p.depends_on, p.input) for p in made.jobs]


def test_each_job_knows_where_its_step_is() -> None:
    counter = itertools.count(1)
    nested = Chain((step("a"), Group((step("b"), Chain((step("c"),))), then=step("d"))))
    made = plan(nested, "w", lambda: f"j{next(counter)}")
    assert [p.step for p in made.jobs] == [
        "chain[0]", "chain[1].group[0]", "chain[1].group[1].chain[0]", "chain[1].then",
    ]  # fmt: skip
    assert {p.workflow_id for p in made.jobs} == {"w"}


def test_a_chain_passes_each_result_to_the_next_unless_a_step_says_not() -> None:
    assert laid_out(Chain((step("a"), step("b"), step("c", pass_result=False)))) == [
        ("j1", "a", (), None),
        ("j2", "b", ("j1",), {"job": "j1"}),
        ("j3", "c", ("j2",), None),
    ]


def test_a_group_s_callback_waits_for_every_member_and_takes_their_results_in_order() -> None:
    nested = Group((step("a"), Chain((step("b"), step("c")))), then=step("d"))
    assert laid_out(nested) == [
        ("j1", "a", (), None),
        ("j2", "b", (), None),
        ("j3", "c", ("j2",), {"job": "j2"}),
        ("j4", "d", ("j1", "j3"), {"list": [{"job": "j1"}, {"job": "j3"}]}),
    ]


def test_a_chain_into_a_group_gives_each_member_the_result_and_the_output_is_theirs() -> None:
    counter = itertools.count(1)
    made = plan(Chain((step("a"), Group((step("b"), step("c"))))), "w", lambda: f"j{next(counter)}")
    assert [(p.depends_on, p.input) for p in made.jobs[1:]] == [
        (("j1",), {"job": "j1"}),
        (("j1",), {"job": "j1"}),
    ]
    assert made.output == {"list": [{"job": "j2"}, {"job": "j3"}]}
    assert resolve(made.output, {"j2": 2, "j3": [3]}) == [2, [3]]


def _job(state: JobState) -> Job:
    return Job("x", "t", [], {}, state, 0.0)


def test_a_workflow_s_state_follows_its_jobs() -> None:
    ok, failed, canceled = _job(JobState.SUCCEEDED), _job(JobState.FAILED), _job(JobState.CANCELED)
    assert workflow_state([ok, _job(JobState.RUNNING)]) == "running"
    assert workflow_state([ok, ok]) == "succeeded"
    assert workflow_state([ok, failed, canceled]) == "failed"
    assert workflow_state([ok, canceled]) == "canceled"

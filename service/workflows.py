"""Workflows: a chain or a group of steps (each a task call, or a chain or group in turn), laid
out as jobs that wait for each other (``depends_on``), each with the input it takes from the
jobs before it. Pure: the scheduler makes the jobs, the store lets them go.

A step's input is a template over the results of the jobs it waits for: ``{"job": id}`` is
that job's result, ``{"list": [template, ...]}`` a list of them in order. A chain passes each
step's output to the next step (as its first argument, unless the step says ``pass_result``
false); a group passes its input to each member, and its output is the list of theirs; its
``then`` step takes that list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .jobs import Job, JobSpec, JobState

Template = dict[str, Any]  # {"job": id} or {"list": [Template, ...]}


@dataclass(frozen=True, slots=True)
class Step:
    """One task call of a workflow."""

    spec: JobSpec
    pass_result: bool = True  # take the output of the steps before it as first argument


@dataclass(frozen=True, slots=True)
class Chain:
    steps: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Group:
    members: tuple[Node, ...]
    then: Node | None = None


Node = Step | Chain | Group


@dataclass(frozen=True, slots=True)
class Planned:
    """One job of a workflow, before it is made: its id, what it runs, what it waits for, the
    input it takes from them (None: none), and where its step is (``chain[1].group[0]``)."""

    job_id: str
    spec: JobSpec
    depends_on: tuple[str, ...]
    input: Template | None
    workflow_id: str
    step: str


@dataclass(frozen=True, slots=True)
class Workflow:
    """A workflow as stored: its output template and its jobs, upstream first."""

    id: str
    created_at: float  # epoch seconds
    output: Template
    jobs: list[Job]


@dataclass(frozen=True, slots=True)
class Plan:
    jobs: list[Planned]  # upstream first: each job after every job it waits for
    output: Template  # the workflow's result, from its jobs' results


def plan(node: Node, workflow_id: str, new_id: Callable[[], str]) -> Plan:
    layout = _Layout(workflow_id, new_id)
    output, _ = layout.add(node, None, (), "")
    return Plan(layout.jobs, output)


@dataclass
class _Layout:
    workflow_id: str
    new_id: Callable[[], str]
    jobs: list[Planned] = field(default_factory=list)

    def add(
        self, node: Node, upstream: Template | None, after: tuple[str, ...], where: str
    ) -> tuple[Template, tuple[str, ...]]:
        """Add ``node``'s jobs, each waiting for the jobs ``after`` and taking ``upstream``;
        return its output and the jobs whose end is its end."""
        match node:
            case Step(spec, pass_result):
                job_id = self.new_id()
                taken = upstream if pass_result else None
                step = where or "step"
                self.jobs.append(Planned(job_id, spec, after, taken, self.workflow_id, step))
                return {"job": job_id}, (job_id,)
            case Chain(steps):
                output, ends = upstream, after
                for n, step_node in enumerate(steps):
                    output, ends = self.add(step_node, output, ends, _at(where, f"chain[{n}]"))
                assert output is not None  # a chain has steps
                return output, ends
            case Group(members, then):
                outputs: list[Template] = []
                ends = ()
                for n, member in enumerate(members):
                    member_output, member_ends = self.add(
                        member, upstream, after, _at(where, f"group[{n}]")
                    )
                    outputs.append(member_output)
                    ends += member_ends
                output = {"list": outputs}
                if then is None:
                    return output, ends
                return self.add(then, output, ends, _at(where, "then"))


def _at(where: str, part: str) -> str:
    return f"{where}.{part}" if where else part


def resolve(template: Template, results: Mapping[str, Any]) -> Any:
    """The value ``template`` stands for, given the results of the jobs it names."""
    if "job" in template:
        return results[template["job"]]
    return [resolve(item, results) for item in template["list"]]


def named(template: Template) -> list[str]:
    """The jobs whose results ``template`` takes, in order."""
    if "job" in template:
        return [template["job"]]
    return [job_id for item in template["list"] for job_id in named(item)]


def workflow_state(jobs: list[Job]) -> str:
    """running while a job is unfinished; then succeeded if all did, failed if one failed
    (the jobs after it are canceled for it), else canceled."""
    states = {job.state for job in jobs}
    if states - {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED}:
        return "running"
    if states == {JobState.SUCCEEDED}:
        return "succeeded"
    return "failed" if JobState.FAILED in states else "canceled"

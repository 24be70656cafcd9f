"""Workflows as the client builds them: ``chain(...)`` and ``group(..., then=...)`` of calls
(``call(...)``, ``add.call(...)``) and of each other, and the ``POST /workflows`` body they make;
no I/O of its own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import RequestError
from .options import SubmitOptions, TaskCall

# what a workflow's step may not have of a submit's options: they belong to a job on its own
_NOT_FOR_STEPS = ("run_at", "key", "idempotency_key", "depends_on", "on_dependency_failure")


@dataclass(frozen=True, slots=True)
class Chain:
    """Steps run one after another, each taking the output of the one before."""

    steps: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class Group:
    """Steps run side by side; ``then`` takes the list of their outputs, in order."""

    members: tuple[Step, ...]
    then: Step | None = None


Step = TaskCall | Chain | Group


def chain(*steps: Step) -> Chain:
    """``chain(call("etl.extract", day), call("etl.load"), group(...))``."""
    if not steps:
        raise RequestError("a chain needs at least one step")
    return Chain(steps)


def group(*members: Step, then: Step | None = None) -> Group:
    """``group(call("img.resize", a), call("img.resize", b), then=call("img.zip"))``."""
    if not members:
        raise RequestError("a group needs at least one step")
    return Group(members, then)


def body(step: Chain | Group, defaults: SubmitOptions) -> dict[str, Any]:
    """The ``POST /workflows`` body of ``step``, each call's options over ``defaults``."""
    return _flow(step, defaults)


def _flow(step: Chain | Group, defaults: SubmitOptions) -> dict[str, Any]:
    if isinstance(step, Chain):
        return {"chain": [_step(s, defaults) for s in step.steps]}
    made: dict[str, Any] = {"group": [_step(s, defaults) for s in step.members]}
    if step.then is not None:
        made["then"] = _step(step.then, defaults)
    return made


def _step(step: Step, defaults: SubmitOptions) -> dict[str, Any]:
    if not isinstance(step, TaskCall):
        return _flow(step, defaults)
    options = step.options_over(defaults)
    given = [name for name in _NOT_FOR_STEPS if getattr(options, name) is not None]
    if given:
        raise RequestError(f"a workflow's step takes no {', '.join(given)} ({step.task})")
    made = step.body(options)
    if not step.pass_result:
        made["pass_result"] = False
    return made

"""The tasks the workflow benchmark (``bench/bench_workflows.py``) runs: as little as a step
can do, so that what is measured is the workflow's own cost."""

from __future__ import annotations

from conveyor import task


@task
def nothing() -> None:
    """A group's member."""


@task
def count(results: list[object]) -> int:
    """A group's callback: how many results it got."""
    return len(results)


@task
def plus_one(value: int) -> int:
    """A chain's step: the one before's output, plus one."""
    return value + 1

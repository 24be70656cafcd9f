"""A task declared with a schedule, in a module of its own.

A module that declares a cron makes the workers that import it import croniter too; the other
tests' workers, which import only ``tests.sample_tasks``, are spared that.
"""

from __future__ import annotations

from service import task


@task(cron="0 0 29 2 *")
def leap_day() -> str:
    """Declared with a schedule that fires at midnight UTC on leap days only."""
    return "leap"

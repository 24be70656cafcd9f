"""A task declared with a schedule that ticks every second: every service that imports it
fires each tick, and the tick must still make one job."""

from __future__ import annotations

from service import task


@task(cron="* * * * * *")
def tick() -> str:
    return "tick"

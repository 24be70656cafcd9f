"""Conveyor: a background-job service with a killable process pool, REST and live events.

What task authors import::

    from service import task, progress

    @task
    def add(x: int, y: int) -> int:
        return x + y
"""

from .context import SoftTimeout, progress
from .hooks import on_worker_start, on_worker_stop, worker_state
from .jobs import JobState
from .tasks import task

__all__ = [
    "JobState",
    "SoftTimeout",
    "on_worker_start",
    "on_worker_stop",
    "progress",
    "task",
    "worker_state",
]

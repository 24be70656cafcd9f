"""Demo tasks, served when ``CONVEYOR_TASKS`` is not set."""

from __future__ import annotations

import logging
import time

from service import progress, task


@task
def sleep(seconds: float = 5.0, steps: int = 10) -> dict[str, float]:
    """Sleep ``seconds`` in ``steps`` steps, reporting progress after each."""
    steps = max(1, steps)
    for step in range(steps):
        time.sleep(seconds / steps)
        progress(step + 1, steps, f"step {step + 1} of {steps}")
    return {"slept_s": seconds}


@task
def add(x: float, y: float) -> float:
    """Add two numbers."""
    return x + y


@task
def fail(message: str = "this task always fails") -> None:
    """Raise a RuntimeError with ``message``."""
    raise RuntimeError(message)


@task
def noop() -> None:
    """Do nothing: for measuring the service's own overhead."""


@task
async def countdown(start: int = 5, interval_s: float = 1.0) -> str:
    """An ``async`` task: count down from ``start``, one step per ``interval_s``."""
    # imported here, like the worker does: asyncio (and ssl under it) adds about 6 MiB to every
    # worker, and only the workers that run this task need it
    import asyncio

    for remaining in range(start, 0, -1):
        progress(start - remaining, start, f"{remaining}…")
        await asyncio.sleep(interval_s)
    progress(start, start, "lift-off")
    return "lift-off"


@task
def talk(lines: int = 10, interval_s: float = 0.5) -> int:
    """Print ``lines`` lines and log a warning halfway: watch them on ``/jobs/<id>/logs``."""
    for line in range(1, lines + 1):
        print(f"line {line} of {lines}")
        if line == lines // 2:
            logging.getLogger("service.demo").warning("halfway there")
        time.sleep(interval_s)
    return lines

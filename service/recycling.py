"""The limits of a worker process's life, and the pure decision to replace it between jobs.

Long-lived workers are fast, but what jobs leave behind adds up (caches, fragmented heaps,
leaks in C libraries): a worker that has run ``max_jobs`` jobs, or has grown past
``max_memory_mb``, is replaced by a fresh one once its job is done — never in the middle of one.
"""

from __future__ import annotations

from dataclasses import dataclass

from .settings import DEFAULT_MAX_LOG_LINES, DEFAULT_MAX_RESULT_BYTES


@dataclass(frozen=True, slots=True)
class WorkerLimits:
    """What every worker of a pool is held to."""

    max_jobs: int = 0  # jobs a worker runs before it is replaced; 0: no limit
    max_memory_mb: int = 0  # resident size after a job that gets it replaced; 0: no limit
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES  # a larger result fails its job
    max_log_lines: int = DEFAULT_MAX_LOG_LINES  # output lines of a job kept (the newest)
    stop_timeout_s: float = 5.0  # how long a worker ending normally has for its stop hooks


DEFAULT_LIMITS = WorkerLimits()


@dataclass(frozen=True, slots=True)
class Recycle:
    """Why a worker is replaced: ``kind`` counts it ("jobs" or "memory"), ``reason`` says it."""

    kind: str
    reason: str


def recycle(limits: WorkerLimits, jobs_run: int, resident_mb: float | None) -> Recycle | None:
    """Whether a worker that has run ``jobs_run`` jobs and holds ``resident_mb`` of RAM (None:
    unknown) should be replaced now, and why."""
    if limits.max_jobs and jobs_run >= limits.max_jobs:
        return Recycle("jobs", f"it ran {jobs_run} jobs (CONVEYOR_MAX_JOBS_PER_WORKER)")
    if limits.max_memory_mb and resident_mb is not None and resident_mb > limits.max_memory_mb:
        return Recycle(
            "memory",
            f"it holds {resident_mb:.0f} MB, over CONVEYOR_MAX_WORKER_MEMORY_MB "
            f"({limits.max_memory_mb})",
        )
    return None

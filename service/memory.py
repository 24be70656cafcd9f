"""The memory of worker processes: a job's address-space limit, a worker's resident size.

Linux only (``/proc`` and ``RLIMIT_AS``); elsewhere a worker's size is unknown (no recycling
for memory) and a job with ``memory_limit_mb`` fails with ``MemoryLimitUnavailable``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

MIB = 1024 * 1024


class MemoryLimitUnavailable(Exception):
    """``memory_limit_mb`` cannot be enforced on this system."""


def _statm(pid: int | None = None) -> tuple[int, int] | None:
    """(virtual size, resident size) of a process in bytes; None when unknown."""
    path = f"/proc/{'self' if pid is None else pid}/statm"
    try:
        with open(path, "rb") as f:
            size_pages, resident_pages = f.read().split()[:2]
    except (OSError, ValueError):
        return None
    page_bytes = os.sysconf("SC_PAGE_SIZE")
    return int(size_pages) * page_bytes, int(resident_pages) * page_bytes


def resident_mb(pid: int) -> float | None:
    """How much of process ``pid`` is in RAM now, in MB of 2**20 bytes; None when unknown.

    Now, not at its peak: a worker that gave back what a job took is fine again.
    """
    sizes = _statm(pid)
    return None if sizes is None else sizes[1] / MIB


@contextlib.contextmanager
def address_space_limit(allowance_mb: int | None) -> Iterator[None]:
    """While the block runs, let this process (and what it starts) grow by ``allowance_mb``.

    RLIMIT_AS counts virtual address space, of which an idle worker already maps a good deal
    (thread stacks, the interpreter), so the limit is its current size plus the allowance. The
    kernel refuses what goes over: Python raises MemoryError. The old limit comes back after.
    """
    if allowance_mb is None:
        yield
        return
    try:
        import resource
    except ImportError:
        raise MemoryLimitUnavailable("memory_limit_mb needs RLIMIT_AS (Linux)") from None
    sizes = _statm()
    if sizes is None:
        raise MemoryLimitUnavailable("memory_limit_mb needs /proc (Linux)")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = sizes[0] + allowance_mb * MIB
    for bound in (soft, hard):  # never above a limit the service itself runs under
        if bound != resource.RLIM_INFINITY:
            limit = min(limit, bound)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))

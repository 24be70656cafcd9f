"""Conveyor, by the name it is installed under: tasks, and the client that submits them.

    from conveyor import Client, progress, task

The code lives in ``service``; this package only names its public parts. Task authors' names
(``task``, ``progress``, ...) load nothing heavy, since worker processes import task modules;
the client (``Client``, ``AsyncClient``, their errors and events) loads httpx when first named.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from service import (
    JobState,
    SoftTimeout,
    on_worker_start,
    on_worker_stop,
    progress,
    task,
    worker_state,
)
from service.jobs import Job
from service.taskfn import TaskFunction

if TYPE_CHECKING:
    from service.client import (
        ApiError,
        AsyncClient,
        AsyncJobHandle,
        BadRequest,
        Client,
        Conflict,
        ConnectionFailed,
        ConveyorError,
        Event,
        InvalidArguments,
        InvalidOptions,
        JobCanceled,
        JobFailed,
        JobHandle,
        KeyTaken,
        LogEvent,
        NotFound,
        ProgressEvent,
        ServiceUnavailable,
        StateEvent,
        Unauthorized,
        UnknownTask,
        WaitTimeout,
        call,
    )

_CLIENT_NAMES = frozenset(
    {
        "ApiError", "AsyncClient", "AsyncJobHandle", "BadRequest", "Client", "Conflict",
        "ConnectionFailed", "ConveyorError", "Event", "InvalidArguments", "InvalidOptions",
        "JobCanceled", "JobFailed", "JobHandle", "KeyTaken", "LogEvent", "NotFound",
        "ProgressEvent", "ServiceUnavailable", "StateEvent", "Unauthorized", "UnknownTask",
        "WaitTimeout", "call",
    }
)  # fmt: skip


def __getattr__(name: str) -> Any:
    # PEP 562: the client's names are loaded on first use, so a worker never imports httpx
    if name in _CLIENT_NAMES:
        return getattr(importlib.import_module("service.client"), name)
    raise AttributeError(f"module 'conveyor' has no attribute {name!r}")


__all__ = [
    "ApiError",
    "AsyncClient",
    "AsyncJobHandle",
    "BadRequest",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "ConveyorError",
    "Event",
    "InvalidArguments",
    "InvalidOptions",
    "Job",
    "JobCanceled",
    "JobFailed",
    "JobHandle",
    "JobState",
    "KeyTaken",
    "LogEvent",
    "NotFound",
    "ProgressEvent",
    "ServiceUnavailable",
    "SoftTimeout",
    "StateEvent",
    "TaskFunction",
    "Unauthorized",
    "UnknownTask",
    "WaitTimeout",
    "call",
    "on_worker_start",
    "on_worker_stop",
    "progress",
    "task",
    "worker_state",
]

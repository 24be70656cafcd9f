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
    from service.client import *  # noqa: F403  (the client's names, as __getattr__ gives them)


def __getattr__(name: str) -> Any:
    # PEP 562: the client's names load on first use, so a worker never imports httpx
    client = importlib.import_module("service.client")
    if name in client.__all__:
        return getattr(client, name)
    raise AttributeError(f"module 'conveyor' has no attribute {name!r}")


__all__ = [  # noqa: RUF022  (task authors' names, then the client's: service.client.__all__)
    "Job",
    "JobState",
    "SoftTimeout",
    "TaskFunction",
    "on_worker_start",
    "on_worker_stop",
    "progress",
    "task",
    "worker_state",
    "ApiError",
    "AsyncClient",
    "AsyncJobHandle",
    "AsyncSchedules",
    "AsyncSubmitter",
    "BadRequest",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "ConveyorError",
    "Event",
    "IdempotencyKeyReused",
    "InvalidArguments",
    "InvalidOptions",
    "JobCanceled",
    "JobFailed",
    "JobHandle",
    "JobsPage",
    "KeyTaken",
    "LogEvent",
    "Logs",
    "NotFound",
    "OtherEvent",
    "PayloadTooLarge",
    "ProgressEvent",
    "PrunedEvent",
    "RequestError",
    "ScheduleInfo",
    "Schedules",
    "ServiceUnavailable",
    "ShuttingDown",
    "StateEvent",
    "SubmitOptions",
    "Submitted",
    "Submitter",
    "TaskCall",
    "TaskInfo",
    "TaskParam",
    "Unauthorized",
    "UnknownTask",
    "Unprocessable",
    "WaitTimeout",
    "call",
    "default_client",
    "WorkflowHandle",
    "WorkflowInfo",
    "chain",
    "group",
    "AsyncWorkflowHandle",
]

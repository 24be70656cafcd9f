"""Conveyor from Python: ``Client`` (sync) and ``AsyncClient`` (asyncio), with job handles.

from conveyor import Client

with Client() as client:                      # CONVEYOR_URL, else http://127.0.0.1:8000
    job = client.submit("service.demo.add", 2, 3)
    print(job.result(timeout_s=10))           # 5, in one request once it is done
"""

from __future__ import annotations

import atexit
import os
import threading

from .aio import AsyncClient, AsyncJobHandle, AsyncSchedules, AsyncSubmitter, AsyncWorkflowHandle
from .errors import (
    ApiError,
    BadRequest,
    Conflict,
    ConnectionFailed,
    ConveyorError,
    IdempotencyKeyReused,
    InvalidArguments,
    InvalidOptions,
    JobCanceled,
    JobFailed,
    KeyTaken,
    NotFound,
    PayloadTooLarge,
    RequestError,
    ServiceUnavailable,
    ShuttingDown,
    Unauthorized,
    UnknownTask,
    Unprocessable,
    WaitTimeout,
)
from .events import Event, LogEvent, OtherEvent, ProgressEvent, PrunedEvent, StateEvent
from .options import SubmitOptions, TaskCall, call
from .records import JobsPage, Logs, ScheduleInfo, Submitted, TaskInfo, TaskParam, WorkflowInfo
from .sync import Client, JobHandle, Schedules, Submitter, WorkflowHandle
from .workflows import chain, group


def default_client() -> Client:
    """The client ``@task``'s ``submit`` uses: one per ``CONVEYOR_URL`` and ``CONVEYOR_TOKEN``,
    kept open for the life of the process, so submits reuse its connections."""
    url, token = os.environ.get("CONVEYOR_URL"), os.environ.get("CONVEYOR_TOKEN")
    # per process too: a forked child (a pre-forking web server) must not share the parent's
    # connections
    return _client_for(url, token, os.getpid())


_defaults: dict[tuple[str | None, str | None, int], Client] = {}
_defaults_lock = threading.Lock()


def _client_for(url: str | None, token: str | None, pid: int) -> Client:
    with _defaults_lock:  # submits from several threads share one client
        made = _defaults.get((url, token, pid))
        if made is None:
            made = _defaults[(url, token, pid)] = Client(url, token)
        return made


@atexit.register
def _close_defaults() -> None:
    # their connections are closed as the process ends, not left to the garbage collector
    for made in _defaults.values():
        made.close()
    _defaults.clear()


__all__ = [
    "ApiError",
    "AsyncClient",
    "AsyncJobHandle",
    "AsyncSchedules",
    "AsyncSubmitter",
    "AsyncWorkflowHandle",
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
    "WorkflowHandle",
    "WorkflowInfo",
    "call",
    "chain",
    "default_client",
    "group",
]

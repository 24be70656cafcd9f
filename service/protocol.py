"""The messages between the service and its worker processes: one JSON object per line.

service → worker: ``{"job": id, "task": name, "args": [...], "kwargs": {...}}``
worker → service: ``{"t": "ready"}``, ``{"t": "progress", "job", "done", "total", "message"}``,
``{"t": "result", "job", "result"}`` or
``{"t": "error", "job", "error": {"type", "message", "traceback"}}``.
"""

from __future__ import annotations

from typing import Any

import orjson

READY = "ready"
PROGRESS = "progress"
RESULT = "result"
ERROR = "error"


def encode(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message) + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    message = orjson.loads(line)
    if not isinstance(message, dict):
        raise ValueError(f"expected a JSON object, got {type(message).__name__}")
    return message


# The largest message a worker may send (a result, mostly); larger results fail the job.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

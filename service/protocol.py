"""The messages between the service and its worker processes: one JSON object per line.

service → worker: ``{"job": id, "task": name, "args": [...], "kwargs": {...}, ...limits}``
worker → service: ``{"t": "ready"}``, ``{"t": "progress", "job", "done", "total", "message"}``,
``{"t": "log", "job", "entries": [{"at", "stream", "text", "level"?, "logger"?}], "dropped"}``,
``{"t": "result", "job", "result"}`` or
``{"t": "error", "job", "error": {"type", "message", "traceback"}}`` (``"job": null`` when the
worker could not start).
"""

from __future__ import annotations

from typing import Any

import orjson

READY = "ready"
PROGRESS = "progress"
LOG = "log"
RESULT = "result"
ERROR = "error"


def encode(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message) + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    message = orjson.loads(line)
    if not isinstance(message, dict):
        raise ValueError(f"expected a JSON object, got {type(message).__name__}")
    return message


# The largest message a worker may send: the hard cap of the pipe. Results have their own,
# smaller limit (CONVEYOR_MAX_RESULT_BYTES, checked in the worker), which must leave room for
# the envelope.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_RESULT_BYTES = MAX_MESSAGE_BYTES - 64 * 1024
DEFAULT_MAX_RESULT_BYTES = 1024 * 1024
DEFAULT_MAX_LOG_LINES = 1000
MAX_LOG_LINES = 100_000  # per job: what a worker may hold, the store keep, a response carry
MAX_LOG_LINE_CHARS = 4 * 1024  # longer output lines and log records are cut
MAX_ERROR_MESSAGE_CHARS = 64 * 1024
MAX_TRACEBACK_CHARS = 256 * 1024
MAX_PROGRESS_MESSAGE_CHARS = 4 * 1024


def clean_text(text: str, limit: int, *, keep_end: bool = False) -> str:
    """``text`` as valid UTF-8 (odd bytes escaped) cut to ``limit`` characters.

    Exception messages can carry undecodable file names or megabytes of data; neither may
    break the message that reports them.
    """
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) <= limit:
        return text
    cut = f"[… {len(text) - limit} characters cut …]"
    return cut + text[-limit:] if keep_end else text[:limit] + cut

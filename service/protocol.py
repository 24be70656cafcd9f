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

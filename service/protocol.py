"""The messages between the service and its worker processes, and their one wire format.

Each message is a frozen dataclass; the pool and the worker build them and ``match`` on them.
On the pipe a message is one JSON object per line with its kind under ``"t"``:

service → worker: ``{"t": "run", "job", "task", "args", "kwargs", "soft_timeout_s",
"memory_limit_mb", "max_result_bytes", "max_log_lines"}``
worker → service: ``{"t": "ready", "pid"}``, ``{"t": "progress", "job", "done", "total",
"message"}``, ``{"t": "log", "job", "entries": [{"at", "stream", "text", "level"?,
"logger"?}], "dropped"}``, ``{"t": "result", "job", "result"}`` or ``{"t": "error", "job",
"error": {"type", "message", "traceback"}}`` (``"job": null`` when the worker could not start).

Only ``encode``, ``decode_run`` and ``decode_from_worker`` know that format. A line that is not
a message the reading side expects raises ``MalformedMessage``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias, TypeVar

import orjson

from .jobs import JobError

# The largest message a worker may send: the hard cap of the pipe, which bounds what the
# service holds for one line. A job's result has its own limit, which leaves room for the rest
# of its message (settings.MAX_RESULT_BYTES).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class MalformedMessage(ValueError):
    """A line that is not a message the reader expects: not a JSON object, of an unknown
    kind, or with a field missing or of the wrong type."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Run:
    """Run one job (service → worker), with the limits the worker holds it to."""

    kind: ClassVar[str] = "run"
    job: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    soft_timeout_s: float | None
    memory_limit_mb: int | None
    max_result_bytes: int  # a larger result (as JSON) fails the job in the worker
    max_log_lines: int  # output entries the worker holds for the job: the newest


@dataclass(frozen=True, slots=True)
class Ready:
    """The worker has loaded its tasks and run its start hooks: it takes jobs now."""

    kind: ClassVar[str] = "ready"
    pid: int


@dataclass(frozen=True, slots=True)
class Progress:
    """How far the running job is: the latest ``progress()`` call the worker let through."""

    kind: ClassVar[str] = "progress"
    job: str
    done: float
    total: float | None
    message: str | None


@dataclass(frozen=True, slots=True)
class Log:
    """A batch of the running job's output, and how many older entries the worker dropped."""

    kind: ClassVar[str] = "log"
    job: str
    entries: list[dict[str, Any]]  # {"at", "stream", "text", "level"?, "logger"?}: see logs.py
    dropped: int


@dataclass(frozen=True, slots=True)
class Result:
    """The job's return value. The worker may hold it as an ``orjson.Fragment``, already JSON,
    so that a large result is serialised once; the service reads it as plain JSON values."""

    kind: ClassVar[str] = "result"
    job: str
    result: Any


@dataclass(frozen=True, slots=True)
class Error:
    """The job failed; with ``job`` None, the worker could not start (a task module, a hook)."""

    kind: ClassVar[str] = "error"
    job: str | None
    error: JobError


WorkerMessage: TypeAlias = Ready | Progress | Log | Result | Error
Message: TypeAlias = Run | WorkerMessage
_M = TypeVar("_M", bound=Message)


def encode(message: Message) -> bytes:
    """``message`` as one line of the pipe."""
    return orjson.dumps(_fields(message), option=orjson.OPT_APPEND_NEWLINE)


def _fields(message: Message) -> dict[str, Any]:
    # spelt out, not left to orjson: it writes a dataclass with slots several times slower
    match message:
        case Run():
            return {
                "t": Run.kind, "job": message.job, "task": message.task,
                "args": message.args, "kwargs": message.kwargs,
                "soft_timeout_s": message.soft_timeout_s,
                "memory_limit_mb": message.memory_limit_mb,
                "max_result_bytes": message.max_result_bytes,
                "max_log_lines": message.max_log_lines,
            }  # fmt: skip
        case Ready():
            return {"t": Ready.kind, "pid": message.pid}
        case Progress():
            return {
                "t": Progress.kind, "job": message.job, "done": message.done,
                "total": message.total, "message": message.message,
            }  # fmt: skip
        case Log():
            return {
                "t": Log.kind, "job": message.job, "entries": message.entries,
                "dropped": message.dropped,
            }  # fmt: skip
        case Result():
            return {"t": Result.kind, "job": message.job, "result": message.result}
        case Error():
            return {"t": Error.kind, "job": message.job, "error": message.error.as_dict()}


def decode_run(line: bytes) -> Run:
    """The ``Run`` message ``line`` holds (what a worker reads)."""
    return _decoded(line, _TO_WORKER)


def decode_from_worker(line: bytes) -> WorkerMessage:
    """The message a worker sent as ``line`` (what the pool reads)."""
    return _decoded(line, _FROM_WORKER)


def _decoded(line: bytes, decoders: Mapping[str, Callable[[dict[str, Any]], _M]]) -> _M:
    try:
        fields = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessage(f"not JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise MalformedMessage(f"expected a JSON object, got {type(fields).__name__}")
    kind = fields.get("t")
    decode = decoders.get(kind) if type(kind) is str else None  # a list is no key
    if decode is None:
        raise MalformedMessage(f"unknown message kind {kind!r}")
    try:
        return decode(fields)
    except MalformedMessage as exc:
        raise MalformedMessage(f"{kind} message: {exc.problem}") from None


# The types a field may have, as orjson decodes JSON: exact types, so that true is no number.
_NONE = type(None)
_TEXT = (str,)
_TEXT_OR_NONE = (str, _NONE)
_WHOLE = (int,)
_WHOLE_OR_NONE = (int, _NONE)
_NUMBER = (int, float)
_NUMBER_OR_NONE = (int, float, _NONE)
_LIST = (list,)
_DICT = (dict,)
_JSON = (dict, list, str, int, float, bool, _NONE)  # any value: present is what counts
_MISSING = object()


def _field(fields: dict[str, Any], name: str, types: tuple[type, ...], within: str = "") -> Any:
    value = fields.get(name, _MISSING)
    if type(value) in types:
        return value
    if value is _MISSING:
        raise MalformedMessage(f"no {within}{name}")
    expected = " or ".join(map(_type_name, types))
    raise MalformedMessage(f"{within}{name} must be {expected}, got {_type_name(type(value))}")


def _type_name(t: type) -> str:
    return "null" if t is _NONE else t.__name__


def _run(fields: dict[str, Any]) -> Run:
    return Run(
        _field(fields, "job", _TEXT),
        _field(fields, "task", _TEXT),
        _field(fields, "args", _LIST),
        _field(fields, "kwargs", _DICT),
        _field(fields, "soft_timeout_s", _NUMBER_OR_NONE),
        _field(fields, "memory_limit_mb", _WHOLE_OR_NONE),
        _field(fields, "max_result_bytes", _WHOLE),
        _field(fields, "max_log_lines", _WHOLE),
    )


def _ready(fields: dict[str, Any]) -> Ready:
    return Ready(_field(fields, "pid", _WHOLE))


def _progress(fields: dict[str, Any]) -> Progress:
    return Progress(
        _field(fields, "job", _TEXT),
        _field(fields, "done", _NUMBER),
        _field(fields, "total", _NUMBER_OR_NONE),
        _field(fields, "message", _TEXT_OR_NONE),
    )


def _log(fields: dict[str, Any]) -> Log:
    # each entry is checked where it is stored (logs.entries_from_worker), which drops bad ones
    return Log(
        _field(fields, "job", _TEXT),
        _field(fields, "entries", _LIST),
        _field(fields, "dropped", _WHOLE),
    )


def _result(fields: dict[str, Any]) -> Result:
    return Result(_field(fields, "job", _TEXT), _field(fields, "result", _JSON))


def _error(fields: dict[str, Any]) -> Error:
    error = _field(fields, "error", _DICT)
    return Error(
        _field(fields, "job", _TEXT_OR_NONE),
        JobError(
            _field(error, "type", _TEXT, "error."),
            _field(error, "message", _TEXT, "error."),
            _field(error, "traceback", _TEXT_OR_NONE, "error."),
        ),
    )


_TO_WORKER: dict[str, Callable[[dict[str, Any]], Run]] = {Run.kind: _run}
_FROM_WORKER: dict[str, Callable[[dict[str, Any]], WorkerMessage]] = {
    Ready.kind: _ready,
    Progress.kind: _progress,
    Log.kind: _log,
    Result.kind: _result,
    Error.kind: _error,
}

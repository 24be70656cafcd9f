"""One table from each exception the routes let through to its status, ``error`` code and the
fields that say more; one handler answers them all in the shape of ``error_response``."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pydantic
from quart import Quart, Response, current_app
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ..errors import (
    BatchRejected,
    IdempotencyKeyReused,
    InvalidArguments,
    InvalidOptions,
    InvalidTransition,
    JobNotFound,
    KeyTaken,
    RateLimited,
    ScheduleConflict,
    ScheduleNotFound,
    ServiceError,
    ShuttingDown,
    StepRejected,
    StoreFailed,
    TooManyStreams,
    UnknownDependencies,
    UnknownTask,
    UnsafeText,
    WorkflowNotFound,
)
from ..wire import job_json
from .responses import JsonRefused, UnknownParameters, json_response


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    error: str
    extra: Callable[[Any], dict[str, Any]] = lambda exc: {}  # fields beside error and detail
    headers: dict[str, str] = field(default_factory=dict)
    headers_of: Callable[[Any], dict[str, str]] = lambda exc: {}  # those that depend on it


def _transition(exc: InvalidTransition) -> dict[str, Any]:
    extra: dict[str, Any] = {"state": exc.current}
    if exc.job is not None:  # the job as it is now: a client need not ask again
        extra["job"] = job_json(exc.job)
    return extra


# Looked up along the exception's classes, most specific first (as Quart finds handlers).
ERRORS: dict[type[BaseException], Answer] = {
    UnknownParameters: Answer(
        400,
        "invalid_request",
        lambda e: {"fields": [{"field": n, "message": "not a parameter"} for n in e.names]},
    ),
    JsonRefused: Answer(422, "invalid_json"),
    UnsafeText: Answer(422, "unsafe_text", lambda e: {"field": e.field}),
    UnknownTask: Answer(422, "unknown_task", lambda e: {"task": e.name}),
    InvalidArguments: Answer(
        422, "invalid_arguments", lambda e: {"task": e.task, "fields": e.fields}
    ),
    InvalidOptions: Answer(422, "invalid_options", lambda e: {"task": e.task}),
    IdempotencyKeyReused: Answer(422, "idempotency_key_reused"),
    UnknownDependencies: Answer(
        422,
        "unknown_dependencies",
        lambda e: {"unknown": e.job_ids, **({} if e.index is None else {"index": e.index})},
    ),
    JobNotFound: Answer(404, "not_found"),
    ScheduleNotFound: Answer(404, "not_found"),
    WorkflowNotFound: Answer(404, "not_found"),
    InvalidTransition: Answer(409, "conflict", _transition),
    KeyTaken: Answer(409, "key_taken", lambda e: {"key": e.key, "holder": e.holder_id}),
    ScheduleConflict: Answer(409, "conflict"),
    ShuttingDown: Answer(503, "shutting_down", headers={"Retry-After": "5"}),
    TooManyStreams: Answer(503, "too_many_streams", headers={"Retry-After": "5"}),
    RateLimited: Answer(
        429,
        "rate_limited",
        headers_of=lambda e: {"Retry-After": str(max(1, math.ceil(e.retry_after_s)))},
    ),
    StoreFailed: Answer(503, "store_unavailable", headers={"Retry-After": "1"}),
    ServiceError: Answer(503, "unavailable"),  # the store failed under the request, say
}


Described = tuple[int, dict[str, Any], dict[str, str]]  # status, body, headers


def describe(exc: BaseException) -> Described | None:
    """The error response ``exc`` gets, or None if it is not one the API answers (a bug: 500)."""
    if isinstance(exc, BatchRejected):  # answered as its cause is, with the job's place
        status, body, headers = describe(exc.cause) or (422, {}, {})
        return status, {**body, "detail": str(exc), "index": exc.index}, headers
    if isinstance(exc, StepRejected):  # and a workflow's step, with where it is
        status, body, headers = describe(exc.cause) or (422, {}, {})
        return status, {**body, "detail": str(exc), "step": exc.step}, headers
    for kind in type(exc).__mro__:
        known = ERRORS.get(kind)
        if known is not None:
            body = {"error": known.error, "detail": str(exc), **known.extra(exc)}
            return known.status, body, {**known.headers, **known.headers_of(exc)}
    if isinstance(exc, pydantic.ValidationError):
        return 400, _invalid_request(exc), {}
    if isinstance(exc, RequestEntityTooLarge):
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        detail = f"the body is larger than {limit} bytes (CONVEYOR_MAX_BODY_BYTES)"
        return 413, {"error": "request_entity_too_large", "detail": detail}, {}
    if isinstance(exc, HTTPException):
        code = exc.code or 500
        name = (exc.name or "error").lower().replace(" ", "_")
        return code, {"error": name, "detail": exc.description or name}, {}
    return None


def _invalid_request(error: pydantic.ValidationError) -> dict[str, Any]:
    fields = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "body"
        fields.append({"field": where, "message": item["msg"]})
    detail = "; ".join(f"{f['field']}: {f['message']}" for f in fields) or str(error)
    return {"error": "invalid_request", "detail": detail, "fields": fields}


def install(app: Quart) -> None:
    """Answer every exception of the table (and pydantic's, and HTTP's) with one handler."""

    async def handle(exc: Exception) -> Response:
        described = describe(exc)
        if described is None:
            raise exc
        status, body, headers = described
        return json_response(body, status, headers or None)

    for kind in (*ERRORS, BatchRejected, pydantic.ValidationError, HTTPException):
        app.register_error_handler(kind, handle)

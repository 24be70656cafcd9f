"""What the client raises: one base class, ``ConveyorError``, and one table from the API's
``error`` codes to the classes.

API errors carry the response's JSON ``error`` and ``detail`` (and the body's other fields);
a job that failed or was canceled surfaces as ``JobFailed`` or ``JobCanceled`` only where the
caller asked for its result.
"""

from __future__ import annotations

from typing import Any

from ..jobs import Job


class ConveyorError(Exception):
    """Base class of everything the client raises on purpose."""


class ConnectionFailed(ConveyorError):
    """The service could not be reached (refused, reset, timed out, bad address)."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot reach Conveyor at {url}: {reason}")


class RequestError(ConveyorError, ValueError):
    """The request cannot be made as asked (a value JSON cannot carry, a header that is not
    ASCII, a URL that is not one): nothing was sent."""


class ApiError(ConveyorError):
    """The service answered with an error: its status, ``error`` code and ``detail``."""

    def __init__(self, status: int, error: str, detail: str, body: dict[str, Any]) -> None:
        self.status = status
        self.error = error
        self.detail = detail
        self.body = body  # the whole JSON body: some errors say more (fields, state, ...)
        super().__init__(f"{status} {error}: {detail}")


class BadRequest(ApiError):
    """400: malformed JSON, a wrong field type, an unknown field or query parameter."""

    @property
    def fields(self) -> list[dict[str, str]]:
        return list(self.body.get("fields") or [])


class Unauthorized(ApiError):
    """401: the service has a token and the request did not send it (``CONVEYOR_TOKEN``)."""


class NotFound(ApiError):
    """404: no job or schedule with that id."""


class Conflict(ApiError):
    """409: the job's state does not allow it (``state``), or an id or key is taken."""

    @property
    def state(self) -> str | None:
        state = self.body.get("state")
        return state if isinstance(state, str) else None


class KeyTaken(Conflict):
    """409: another unfinished job holds the ``key`` (its id is ``holder``)."""

    @property
    def holder(self) -> str | None:
        holder = self.body.get("holder")
        return holder if isinstance(holder, str) else None


class PayloadTooLarge(ApiError):
    """413: the request body is over ``CONVEYOR_MAX_BODY_BYTES``."""


class Unprocessable(ApiError):
    """422: the request is well formed but cannot be done as asked."""


class UnknownTask(Unprocessable):
    """422: no task of that name is served."""


class InvalidArguments(Unprocessable):
    """422: the arguments do not fit the task; ``fields`` names each parameter and its problem."""

    @property
    def fields(self) -> list[dict[str, str]]:
        return list(self.body.get("fields") or [])


class InvalidOptions(Unprocessable):
    """422: the job's options cannot go together."""


class IdempotencyKeyReused(Unprocessable):
    """422: the ``Idempotency-Key`` was used for a different request."""


class ServiceUnavailable(ApiError):
    """503: the service cannot take this now (its store fails, or it is shutting down)."""

    @property
    def retry_after_s(self) -> float | None:
        value = self.body.get("retry_after_s")
        return float(value) if isinstance(value, int | float) else None


class ShuttingDown(ServiceUnavailable):
    """503: the service is draining before it stops; submit again soon."""


# The API's error codes, most specific first; a code not named here falls back on its status.
BY_CODE: dict[str, type[ApiError]] = {
    "key_taken": KeyTaken,
    "unknown_task": UnknownTask,
    "invalid_arguments": InvalidArguments,
    "invalid_options": InvalidOptions,
    "idempotency_key_reused": IdempotencyKeyReused,
    "shutting_down": ShuttingDown,
}
BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: Unprocessable,
    503: ServiceUnavailable,
}


def api_error(status: int, body: Any, retry_after: str | None = None) -> ApiError:
    """The exception for an error response: by its ``error`` code, else by its status."""
    if not isinstance(body, dict):
        body = {}
    code = str(body.get("error") or f"http_{status}")
    detail = str(body.get("detail") or "the service gave no detail")
    if retry_after is not None and retry_after.isdigit():
        body = {**body, "retry_after_s": int(retry_after)}
    cls = BY_CODE.get(code) or BY_STATUS.get(status, ApiError)
    return cls(status, code, detail, body)


class JobFailed(ConveyorError):
    """The job ended ``failed``: ``error_type``, ``message`` and ``traceback`` are the task's."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.error_type = job.error.type if job.error else "Unknown"
        self.message = job.error.message if job.error else ""
        self.traceback = job.error.traceback if job.error else None
        super().__init__(f"job {job.id} ({job.task}) failed: {self.error_type}: {self.message}")


class JobCanceled(ConveyorError):
    """The job ended ``canceled``."""

    def __init__(self, job: Job) -> None:
        self.job = job
        super().__init__(f"job {job.id} ({job.task}) was canceled")


class WaitTimeout(ConveyorError, TimeoutError):
    """The job did not finish within the time its caller was willing to wait; it goes on."""

    def __init__(self, job_id: str, timeout_s: float) -> None:
        self.job_id = job_id
        self.timeout_s = timeout_s
        super().__init__(f"job {job_id} did not finish within {timeout_s:g} s")

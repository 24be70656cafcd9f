"""The HTTP face of the service: ``create_app()`` builds the Quart app, its routes and lifecycle.

Run it with ``hypercorn --config hypercorn.toml "service.app:create_app()"``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import sys
import time
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, cast
from zoneinfo import ZoneInfo

import orjson
import pydantic
import pydantic_core
from quart import Quart, Response, current_app, request
from quart.json.provider import JSONProvider
from quart_schema import QuartSchema, document_querystring, document_request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .cron import Schedule
from .db import Database, IdempotencyClaim, check_database
from .errors import (
    BatchRejected,
    IdempotencyKeyReused,
    InvalidArguments,
    InvalidOptions,
    InvalidTransition,
    JobNotFound,
    KeyTaken,
    ScheduleConflict,
    ScheduleNotFound,
    ServiceError,
    SettingsError,
    ShuttingDown,
    StoreUnavailable,
    TaskLoadError,
    UnknownTask,
)
from .events import Broker
from .jobs import isoformat
from .pool import ProcessPool
from .recycling import WorkerLimits
from .retention import RetentionSweep
from .scheduler import Scheduler
from .schedules import Schedules
from .schemas import (
    CreateSchedule,
    JobsQuery,
    LogsQuery,
    SubmitJob,
    SubmitJobs,
    parse_id,
    schedule_json,
)
from .settings import Settings
from .shutdown import GracefulShutdown
from .streams import event_stream
from .streamtokens import StreamTokens
from .tasks import load_tasks
from .wire import job_json

log = logging.getLogger("conveyor")

PUBLIC_PATHS = frozenset({"/health", "/openapi.json"})
# the dashboard's page and files: public, since the page is what asks for the token
PUBLIC_ENDPOINTS = frozenset({"dashboard", "static"})
STREAM_ENDPOINTS = frozenset({"all_events", "job_events"})
# the dashboard renders every value as text; this stops anything else from running on its page
DASHBOARD_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY_CHARS = 255
IDEMPOTENCY_TTL_S = 24 * 3600.0


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # a ready Response: quart-schema would otherwise re-validate every dict it is handed
    return Response(orjson.dumps(body), status, headers, content_type="application/json")


def error_response(status: int, error: str, detail: str, **extra: Any) -> Response:
    return json_response({"error": error, "detail": detail, **extra}, status)


class OrjsonProvider(JSONProvider):
    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return orjson.dumps(obj, default=pydantic_core.to_jsonable_python).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return orjson.loads(s)


# -- the running service --------------------------------------------------------------------


@dataclass(frozen=True)
class Runtime:
    """Everything the routes use, built at start-up and kept on the app."""

    settings: Settings
    broker: Broker
    db: Database
    pool: ProcessPool
    scheduler: Scheduler
    schedules: Schedules


def runtime() -> Runtime:
    return cast(Runtime, current_app.extensions["conveyor"])


def create_app(settings: Settings | None = None) -> Quart:
    """Build the service; without ``settings`` they come from ``CONVEYOR_*`` variables."""
    from_env = settings is None
    try:
        settings = Settings.from_env() if settings is None else settings
        tasks = load_tasks(settings.tasks)
        check_database(settings.database)
    except (SettingsError, TaskLoadError, StoreUnavailable) as exc:
        if not from_env:
            raise
        # started from the command line: one line that names the problem, not a traceback
        print(f"conveyor: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    _configure_logging()
    app = Quart(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    QuartSchema(
        app,
        info={"title": "Conveyor", "version": "0.1.0"},
        swagger_ui_path=None,  # the UIs load scripts from CDNs; the service may be offline
        redoc_ui_path=None,
        scalar_ui_path=None,
    )
    app.json = OrjsonProvider(app)  # after QuartSchema, which installs its own

    @app.while_serving
    async def lifecycle() -> AsyncGenerator[None, None]:
        broker = Broker()
        async with AsyncExitStack() as stack:
            db = await stack.enter_async_context(
                Database(
                    settings.database, on_commit=broker.publish,
                    max_log_lines=settings.max_log_lines,
                )
            )  # fmt: skip
            scheduler: Scheduler | None = None

            def on_progress(job_id: str, progress: Any) -> None:
                if scheduler is not None:
                    scheduler.on_progress(job_id, progress)

            def on_log(job_id: str, entries: list[dict[str, Any]], dropped: int) -> None:
                if scheduler is not None:
                    scheduler.on_log(job_id, entries, dropped)

            pool = await stack.enter_async_context(
                ProcessPool(
                    settings.concurrency, settings.tasks,
                    grace_s=settings.cancel_grace_s, on_progress=on_progress,
                    on_log=on_log, limits=worker_limits(settings),
                )
            )  # fmt: skip
            scheduler = await stack.enter_async_context(
                Scheduler(
                    db,
                    pool,
                    tasks,
                    max_interruptions=settings.max_interruptions,
                    queue_limits=settings.queues,
                )
            )
            await stack.enter_async_context(
                RetentionSweep(
                    db, retention_s=settings.retention_s, idempotency_ttl_s=IDEMPOTENCY_TTL_S
                )
            )
            schedules = await stack.enter_async_context(
                Schedules(db, scheduler, zone=ZoneInfo(settings.timezone))
            )
            app.extensions["conveyor"] = Runtime(settings, broker, db, pool, scheduler, schedules)
            shutdown = GracefulShutdown(scheduler, broker, grace_s=settings.shutdown_grace_s)
            shutdown.install()
            stack.callback(shutdown.stopping)
            log.info(
                "serving %d task(s) from %s on %d worker(s); database %s",
                len(tasks), ", ".join(settings.tasks), settings.concurrency, settings.database,
            )  # fmt: skip
            yield
            running = scheduler.status()["running"]
            log.info("stopping; %d running job(s) to stop and requeue", running)

    stream_tokens = StreamTokens(settings.token)
    app.extensions["conveyor.stream_tokens"] = stream_tokens
    _add_auth(app, settings, stream_tokens)
    _add_error_handlers(app)
    _add_routes(app)
    return app


def worker_limits(settings: Settings) -> WorkerLimits:
    return WorkerLimits(
        max_jobs=settings.max_jobs_per_worker,
        max_memory_mb=settings.max_worker_memory_mb,
        max_result_bytes=settings.max_result_bytes,
        max_log_lines=settings.max_log_lines,
        stop_timeout_s=settings.worker_stop_timeout_s,
    )


def _configure_logging() -> None:
    logger = logging.getLogger("conveyor")
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def has_token(settings: Settings) -> bool:
    """Whether the request may see jobs: no token configured, or the right one sent."""
    if settings.token is None:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # compare_digest takes as long whatever the token; the scheme is case-insensitive (RFC 7235)
    right = hmac.compare_digest(given.strip().encode(), settings.token.encode())
    return right and scheme.lower() == "bearer"


def _add_auth(app: Quart, settings: Settings, stream_tokens: StreamTokens) -> None:
    if settings.token is None:
        return

    @app.before_request
    async def require_token() -> Any:
        if request.path in PUBLIC_PATHS or request.endpoint in PUBLIC_ENDPOINTS:
            return None
        if has_token(settings):
            return None
        if request.endpoint in STREAM_ENDPOINTS and stream_tokens.valid(
            request.args.get("token", "")
        ):
            return None
        response = error_response(
            401, "unauthorized", "send the token as 'Authorization: Bearer <token>'"
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="conveyor"'
        return response


def _add_error_handlers(app: Quart) -> None:
    @app.errorhandler(pydantic.ValidationError)
    async def invalid_request(exc: pydantic.ValidationError) -> Any:
        return _validation_error(exc)

    @app.errorhandler(RequestEntityTooLarge)
    async def too_large(exc: RequestEntityTooLarge) -> Any:
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        detail = f"the body is larger than {limit} bytes (CONVEYOR_MAX_BODY_BYTES)"
        return error_response(413, "request_entity_too_large", detail)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Any:
        code = exc.code or 500
        name = (exc.name or "error").lower().replace(" ", "_")
        return error_response(code, name, exc.description or name)

    _add_job_error_handlers(app)


def _add_job_error_handlers(app: Quart) -> None:
    @app.errorhandler(UnknownTask)
    async def unknown_task(exc: UnknownTask) -> Any:
        return error_response(422, "unknown_task", str(exc), task=exc.name)

    @app.errorhandler(InvalidArguments)
    async def invalid_arguments(exc: InvalidArguments) -> Any:
        return error_response(422, "invalid_arguments", str(exc), task=exc.task, fields=exc.fields)

    @app.errorhandler(InvalidOptions)
    async def invalid_options(exc: InvalidOptions) -> Any:
        return error_response(422, "invalid_options", str(exc), task=exc.task)

    @app.errorhandler(BatchRejected)
    async def batch_rejected(exc: BatchRejected) -> Any:
        codes = {UnknownTask: "unknown_task", InvalidArguments: "invalid_arguments"}
        code = codes.get(type(exc.cause), "invalid_options")
        return error_response(422, code, str(exc), index=exc.index)

    @app.errorhandler(JobNotFound)
    async def job_not_found(exc: JobNotFound) -> Any:
        return error_response(404, "not_found", str(exc))

    @app.errorhandler(InvalidTransition)
    async def conflict(exc: InvalidTransition) -> Any:
        return error_response(409, "conflict", str(exc), state=exc.current)

    @app.errorhandler(KeyTaken)
    async def key_taken(exc: KeyTaken) -> Any:
        return error_response(409, "key_taken", str(exc), key=exc.key, holder=exc.holder_id)

    @app.errorhandler(IdempotencyKeyReused)
    async def idempotency_key_reused(exc: IdempotencyKeyReused) -> Any:
        return error_response(422, "idempotency_key_reused", str(exc))

    @app.errorhandler(ShuttingDown)
    async def shutting_down(exc: ShuttingDown) -> Any:
        response = error_response(503, "shutting_down", str(exc))
        response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(ServiceError)
    async def service_error(exc: ServiceError) -> Any:
        return error_response(503, "unavailable", str(exc))


def _validation_error(error: pydantic.ValidationError) -> Response:
    fields = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "body"
        fields.append({"field": where, "message": item["msg"]})
    detail = "; ".join(f"{f['field']}: {f['message']}" for f in fields) or str(error)
    return error_response(400, "invalid_request", detail, fields=fields)


class _UnsupportedMediaType(HTTPException):
    code = 415
    description = "send a JSON body with 'Content-Type: application/json'"


class _InvalidRequest(HTTPException):
    code = 400
    name = "Invalid Request"


async def json_body() -> Any:
    """The request body as JSON: 415 unless declared JSON (browsers cannot send that
    cross-site unasked), 400 if malformed, 413 if over the size limit."""
    if not request.is_json:
        raise _UnsupportedMediaType
    try:
        return orjson.loads(await request.get_data())
    except orjson.JSONDecodeError as exc:
        raise _InvalidRequest(f"the body is not valid JSON: {exc}") from None


def _last_event_id() -> int | None:
    text = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    if not text:
        return None
    value = parse_id(text)
    if value is None:
        raise _InvalidRequest(f"Last-Event-ID must be an event id (a whole number), got {text!r}")
    return value


def _sse(body: Any) -> Response:
    response = Response(
        body,
        200,
        {
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # proxies must not hold events back
        },
    )
    response.timeout = None  # else RESPONSE_TIMEOUT cuts the stream after 60 s
    return response


def _add_routes(app: Quart) -> None:
    _add_submit_routes(app)
    _add_job_routes(app)
    _add_stream_routes(app)
    _add_schedule_routes(app)
    _add_dashboard_routes(app)
    _add_service_routes(app)


def _add_submit_routes(app: Quart) -> None:
    @app.post("/jobs")
    @document_request(SubmitJob)
    async def submit() -> Any:
        body = await json_body()
        now = time.time()
        claim = _idempotency_claim(body, now)
        data = SubmitJob.model_validate(body)
        job, created = await runtime().scheduler.submit(data.spec(now), claim)
        # 202: a new job; 200: the job this key or this request already has
        status = 202 if created else 200
        return json_response(job_json(job), status, {"Location": f"/jobs/{job.id}"})

    @app.post("/jobs/batch")
    @document_request(SubmitJobs)
    async def submit_batch() -> Any:
        body = await json_body()
        now = time.time()
        claim = _idempotency_claim(body, now)
        data = SubmitJobs.model_validate(body)
        specs = [j.spec(now) for j in data.jobs]
        submitted = await runtime().scheduler.submit_many(specs, claim)
        status = 202 if any(s.created for s in submitted) else 200
        return json_response({"jobs": [job_json(s.job) for s in submitted]}, status)


def _idempotency_claim(body: Any, now: float) -> IdempotencyClaim | None:
    """The request's ``Idempotency-Key`` header with a digest of what it asks for."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_CHARS or not key.isprintable():
        raise _InvalidRequest(
            f"{IDEMPOTENCY_HEADER}: expected 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable characters"
        )
    # the same request however its JSON is spaced or ordered
    canonical = orjson.dumps([request.path, body], option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(canonical).hexdigest()
    return IdempotencyClaim(key, digest, now, IDEMPOTENCY_TTL_S)


def _add_job_routes(app: Quart) -> None:
    @app.get("/jobs")
    @document_querystring(JobsQuery)
    async def list_jobs() -> Any:
        query = JobsQuery.model_validate(request.args.to_dict())
        try:
            states, before = query.states(), query.before()
        except ValueError as exc:
            return error_response(400, "invalid_request", str(exc))
        jobs, next_cursor = await runtime().db.list_jobs(
            states=states, task=query.task, queue=query.queue, text=query.q,
            limit=query.limit, before=before,
        )  # fmt: skip
        next_page = None if next_cursor is None else str(next_cursor)
        return json_response({"jobs": [job_json(j) for j in jobs], "next": next_page})

    @app.get("/jobs/<job_id>")
    async def get_job(job_id: str) -> Any:
        return json_response(job_json(await runtime().db.get_job(job_id)))

    @app.get("/jobs/<job_id>/logs")
    @document_querystring(LogsQuery)
    async def job_logs(job_id: str) -> Any:
        query = LogsQuery.model_validate(request.args.to_dict())
        entries, dropped = await runtime().db.job_logs(job_id, tail=query.tail)
        body = {"job_id": job_id, "entries": [e.as_json() for e in entries], "dropped": dropped}
        return json_response(body)

    @app.post("/jobs/<job_id>/cancel")
    async def cancel(job_id: str) -> Any:
        try:
            job = await runtime().scheduler.cancel(job_id)
        except InvalidTransition as exc:
            return await _conflict(exc, "it cannot be canceled")
        return json_response(job_json(job))

    @app.post("/jobs/<job_id>/retry")
    async def retry(job_id: str) -> Any:
        try:
            job = await runtime().scheduler.retry(job_id)
        except InvalidTransition as exc:
            return await _conflict(exc, "only a failed or canceled job can be retried")
        return json_response(job_json(job))


async def _conflict(exc: InvalidTransition, why: str) -> Response:
    """409 for a job in the wrong state, with that state and the job as it is now."""
    current = await runtime().db.get_job(exc.job_id)
    detail = f"job {exc.job_id} is {exc.current}; {why}"
    return error_response(409, "conflict", detail, state=exc.current, job=job_json(current))


def _add_stream_routes(app: Quart) -> None:
    @app.get("/jobs/<job_id>/events")
    async def job_events(job_id: str) -> Any:
        rt = runtime()
        after_id = min(_last_event_id() or 0, rt.db.last_event_id)
        job = await rt.db.get_job(job_id)
        if job.is_terminal and not await rt.db.events_after(after_id, job_id=job_id, limit=1):
            return Response("", 204)  # nothing more will come: EventSource stops reconnecting
        return _sse(
            event_stream(rt.db, rt.broker, after_id=after_id, job_id=job_id,
                         keepalive_s=rt.settings.sse_keepalive_s)
        )  # fmt: skip

    @app.post("/stream-token")
    async def stream_token() -> Any:
        tokens = cast(StreamTokens, current_app.extensions["conveyor.stream_tokens"])
        return json_response({"token": tokens.issue(), "expires_in_s": tokens.ttl_s})

    @app.get("/events")
    async def all_events() -> Any:
        rt = runtime()
        after_id = _last_event_id()
        if after_id is None or after_id > rt.db.last_event_id:
            # "now" is this request: what happens from here on is sent. An id the store never
            # gave out (it was replaced) must not make the client skip the events to come.
            after_id = rt.db.last_event_id
        stream = event_stream(
            rt.db, rt.broker, after_id=after_id, keepalive_s=rt.settings.sse_keepalive_s
        )
        return _sse(stream)


def _add_schedule_routes(app: Quart) -> None:
    @app.errorhandler(ScheduleNotFound)
    async def schedule_not_found(exc: ScheduleNotFound) -> Any:
        return error_response(404, "not_found", str(exc))

    @app.errorhandler(ScheduleConflict)
    async def schedule_conflict(exc: ScheduleConflict) -> Any:
        return error_response(409, "conflict", str(exc))

    def as_json(rt: Runtime, schedule: Schedule) -> dict[str, Any]:
        next_run_at = rt.schedules.next_run_at(schedule)
        return schedule_json(schedule, next_run_at=next_run_at, timezone=rt.settings.timezone)

    @app.post("/schedules")
    @document_request(CreateSchedule)
    async def create_schedule() -> Any:
        data = CreateSchedule.model_validate(await json_body())
        rt = runtime()
        schedule = await rt.schedules.create(
            data.task, data.cron, args=data.args, kwargs=data.kwargs,
            options=data.job_options(), schedule_id=data.id,
        )  # fmt: skip
        location = {"Location": f"/schedules/{schedule.id}"}
        return json_response(as_json(rt, schedule), 201, location)

    @app.get("/schedules")
    async def list_schedules() -> Any:
        rt = runtime()
        schedules = rt.schedules.list_schedules()
        return json_response({"schedules": [as_json(rt, s) for s in schedules]})

    # <path:...>: the id of a schedule declared in code holds its task's name, which may hold "/"
    @app.get("/schedules/<path:schedule_id>")
    async def get_schedule(schedule_id: str) -> Any:
        rt = runtime()
        return json_response(as_json(rt, rt.schedules.get(schedule_id)))

    @app.delete("/schedules/<path:schedule_id>")
    async def delete_schedule(schedule_id: str) -> Any:
        await runtime().schedules.delete(schedule_id)
        return Response("", 204)


def _add_dashboard_routes(app: Quart) -> None:
    """The dashboard's page, and the figures it shows that the rest of the API has not."""

    @app.get("/")
    async def dashboard() -> Any:
        response = await app.send_static_file("index.html")
        response.headers.update(DASHBOARD_HEADERS)
        return response

    @app.after_request
    async def dashboard_files(response: Response) -> Response:
        if request.endpoint in PUBLIC_ENDPOINTS:
            # checked again each time (a 304 while unchanged): after an upgrade, no browser
            # runs old modules beside new ones
            response.headers["Cache-Control"] = "no-cache"
            response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.get("/stats")
    async def stats() -> Any:
        db = runtime().db
        # both as of the same commit: a client applies the events after event_id to the counts
        body = {"event_id": db.last_event_id, **db.stats.as_json(time.time())}
        return json_response(body)

    @app.get("/workers")
    async def workers() -> Any:
        rt = runtime()
        status = rt.pool.status()
        listed = []
        for worker in status["workers"]:
            job = None
            if worker["job_id"] is not None:
                with contextlib.suppress(JobNotFound):  # pruned or never stored
                    job = await rt.db.get_job(worker["job_id"])
            state = "busy" if worker["job_id"] else "idle" if worker["ready"] else "starting"
            listed.append({
                "pid": worker["pid"], "state": state, "started_at": worker["started_at"],
                "jobs_run": worker["jobs_run"], "job": None if job is None else {
                    "id": job.id, "task": job.task, "started_at": isoformat(job.started_at),
                    "progress": None if job.progress is None else job.progress.as_dict(),
                },
            })  # fmt: skip
        body = {
            "size": status["size"], "busy": status["busy"],
            "idle": sum(1 for w in listed if w["state"] == "idle"), "workers": listed,
        }  # fmt: skip
        return json_response(body)


def _add_service_routes(app: Quart) -> None:
    @app.get("/tasks")
    async def list_tasks() -> Any:
        tasks = runtime().scheduler.tasks
        return json_response({"tasks": [tasks[name].describe() for name in sorted(tasks)]})

    @app.get("/health")
    async def health() -> Any:
        rt = runtime()
        try:
            await rt.db.ping()
            database: dict[str, Any] = {"ok": True}
        except Exception as exc:  # report, don't crash: this is what health checks are for
            database = {"ok": False, "error": str(exc)}
        workers = rt.pool.status()
        if not has_token(rt.settings):  # public: counts only, no job ids, no tracebacks
            workers.pop("workers")
            if workers["start_error"] is not None:
                workers["start_error"] = {**workers["start_error"], "traceback": None}
        # workers still starting (or being replaced) are fine; workers that cannot start are not
        broken = workers["alive"] == 0 and workers["last_start_error"] is not None
        draining = rt.scheduler.draining
        ok = database["ok"] and not broken and not draining
        body = {
            # 503 while draining too: a load balancer sends new work elsewhere
            "status": "draining" if draining else "ok" if ok else "degraded",
            "database": database,
            "workers": workers,
            "jobs": rt.scheduler.status(),
        }
        return json_response(body, 200 if ok else 503)

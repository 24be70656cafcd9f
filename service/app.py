"""The HTTP face of the service: ``create_app()`` builds the Quart app from its blueprints
(``service.api``) and runs the service's parts for as long as it serves.

Run it with ``hypercorn --config hypercorn.toml "service.app:create_app()"``.
"""

from __future__ import annotations

import gc
import logging
import sys
import time
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator
from contextlib import AsyncExitStack, contextmanager
from importlib.metadata import version
from typing import Any
from zoneinfo import ZoneInfo

from quart import Quart, Response, current_app, request
from quart.typing import ResponseReturnValue, ResponseTypes
from quart_cors import cors
from quart_schema import QuartSchema, tag_blueprint
from werkzeug.exceptions import HTTPException

from . import logformat
from .api import auth, errors, hosts
from .api.dashboard import dashboard
from .api.docs import docs
from .api.jobs import IDEMPOTENCY_TTL_S, jobs
from .api.metrics import metrics
from .api.responses import SECURITY_HEADERS, OrjsonProvider, ServiceResponse, refuse_undeclared
from .api.runtime import EXTENSION, Runtime
from .api.schedules import schedules
from .api.service import service
from .api.streams import streams
from .api.tasks import tasks
from .api.workflows import workflows
from .db import check_database, open_store, shown
from .errors import SettingsError, StoreUnavailable, TaskLoadError
from .events import Broker
from .jobs import Event
from .metrics import Metrics
from .pool import ProcessPool
from .ratelimit import SubmitRate
from .reads import Reads
from .recycling import WorkerLimits
from .retention import RetentionSweep
from .scheduler import Scheduler
from .schedules import Schedules
from .settings import Settings
from .shutdown import GracefulShutdown
from .streams import StreamLimit
from .streamtokens import StreamTokens
from .tasks import Task, load_tasks

log = logging.getLogger("conveyor")

YOUNG_GC_THRESHOLD = 20_000  # allocations between collections of the young generation

INFO = {
    "title": "Conveyor",
    "version": version("conveyor"),  # as installed: pyproject.toml's
    "description": (
        "Background jobs over HTTP: submit, watch (Server-Sent Events), cancel while they run, "
        "retry, schedule. Errors are `{error, detail}` with the right status."
    ),
}
# what a page of an allowed origin may send (CONVEYOR_CORS_ORIGINS)
CORS_METHODS = ["GET", "POST", "DELETE"]
CORS_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"]
BLUEPRINTS = (jobs, workflows, streams, schedules, tasks, service, metrics, dashboard, docs)


def create_app(settings: Settings | None = None) -> Quart:
    """Build the service; without ``settings`` they come from ``CONVEYOR_*`` variables."""
    from_env = settings is None
    try:
        settings = Settings.from_env() if settings is None else settings
        known_tasks = load_tasks(settings.tasks)
        check_database(settings.database)
    except (SettingsError, TaskLoadError, StoreUnavailable) as exc:
        if not from_env:
            raise
        # started from the command line: one line that names the problem, not a traceback
        print(f"conveyor: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logformat.configure(settings.log_format)
    app = Quart(__name__, static_folder=None)  # the dashboard blueprint serves the files
    app.response_class = ServiceResponse
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    # a path with "//" is a plain 404, not a redirect to some other path (an HTML 308)
    app.url_map.merge_slashes = False
    # documents the routes; the docs blueprint serves the document and its UI
    QuartSchema(app, info=INFO, openapi_path=None)
    app.make_response = _ready_responses_as_they_are(app.make_response)  # type: ignore[method-assign,assignment]
    app.json = OrjsonProvider(app)  # after QuartSchema, which installs its own
    for blueprint in BLUEPRINTS:
        tag_blueprint(blueprint, [blueprint.name])  # the document groups routes by resource
        app.register_blueprint(blueprint)
    # signed with all the tokens together: no one token is enough to forge one (with no token
    # set, each process has a secret of its own)
    tokens = StreamTokens("\n".join(sorted(settings.scoped_tokens)) or None)
    app.extensions[EXTENSION + ".stream_tokens"] = tokens
    hosts.install(app, settings)  # first: a request from a rebinding page goes no further
    if settings.cors_origins:
        cors(
            app, allow_origin=list(settings.cors_origins), allow_methods=CORS_METHODS,
            allow_headers=CORS_HEADERS, expose_headers=["Location", "Retry-After"],
        )  # fmt: skip
    auth.install(app, settings, tokens)
    errors.install(app)

    @app.before_request
    async def refuse_unknown_parameters() -> None:
        refuse_undeclared(current_app.view_functions.get(request.endpoint or ""))

    @app.after_request
    async def secure(response: Response) -> Response:
        # a ServiceResponse has them from its making; any other (werkzeug's) gets them here
        if not isinstance(response, ServiceResponse):
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
        return response

    @app.while_serving
    async def lifecycle() -> AsyncGenerator[None, None]:
        async with AsyncExitStack() as stack:
            runtime = await _start(stack, settings, known_tasks)
            app.extensions[EXTENSION] = runtime
            stack.enter_context(collector_tuned_for_serving())
            yield
            log.info(
                "stopping; %d running job(s) to stop and requeue",
                runtime.scheduler.status()["running"],
            )

    return app


MakeResponse = Callable[[ResponseReturnValue | HTTPException], Coroutine[Any, Any, ResponseTypes]]


def _ready_responses_as_they_are(make_response: MakeResponse) -> MakeResponse:
    """quart-schema's ``make_response`` for what a view returns, but a ready ``Response`` (what
    every route of the service returns) as it is: quart-schema would first dump it as a model
    (a no-op for a response, some 30 µs a request all the same)."""

    async def make(result: ResponseReturnValue | HTTPException) -> ResponseTypes:
        return result if isinstance(result, Response) else await make_response(result)

    return make


async def _start(stack: AsyncExitStack, settings: Settings, tasks: dict[str, Task]) -> Runtime:
    """Start the service's parts, each stopped by ``stack`` in the reverse order."""
    broker = Broker()
    streams = await stack.enter_async_context(
        StreamLimit(settings.max_streams, stall_s=settings.stream_stall_s)
    )
    # read at each scrape, from the parts made below (none is scraped before they exist)
    figures = Metrics(
        jobs_by_queue=lambda: db.stats.as_json(time.time())["by_queue"],
        workers=lambda: pool.status()["workers"],
        replaced=lambda: pool.replaced,
        streams=lambda: streams.open,
        streams_dropped=lambda: streams.dropped,
    )

    def committed(events: list[Event]) -> None:
        broker.publish(events)
        figures.observe(events)
        if scheduler is not None:
            scheduler.observe(events)

    scheduler: Scheduler | None = None
    db = await stack.enter_async_context(
        open_store(settings.database, on_commit=committed, max_log_lines=settings.max_log_lines)
    )

    # the pool reports a job's progress and output; the scheduler, made after it, records them
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
    # made before it starts, so that it hears the other services' events while it starts
    scheduler = Scheduler(
        db, pool, tasks,
        max_interruptions=settings.max_interruptions, queue_limits=settings.queues,
        queue_rates=settings.queue_rates,
        lease_s=settings.lease_s,
    )  # fmt: skip
    await stack.enter_async_context(scheduler)
    await stack.enter_async_context(
        RetentionSweep(db, retention_s=settings.retention_s, idempotency_ttl_s=IDEMPOTENCY_TTL_S)
    )
    schedules = await stack.enter_async_context(
        Schedules(db, scheduler, zone=ZoneInfo(settings.timezone))
    )
    shutdown = GracefulShutdown(scheduler, broker, grace_s=settings.shutdown_grace_s)
    shutdown.install()
    stack.callback(shutdown.stopping)
    log.info(
        "serving %d task(s) from %s on %d worker(s); database %s",
        len(tasks), ", ".join(settings.tasks), settings.concurrency, shown(settings.database),
    )  # fmt: skip
    reads = Reads(db, broker, pool, scheduler)
    rate = None if settings.submit_rate is None else SubmitRate(settings.submit_rate)
    return Runtime(settings, scheduler, schedules, reads, streams, figures, rate)


@contextmanager
def collector_tuned_for_serving() -> Iterator[None]:
    """Python's cycle collector set for a service with many open streams, while it serves.

    A full collection walks every object and holds the loop meanwhile: with a thousand event
    streams open (a few hundred objects each in Quart, hypercorn and asyncio), over 100 ms. So:
    what the service is made of (modules, models, routes) is frozen out of its sight, and the
    young generation is collected every 20,000 allocations instead of 700, so that what a
    round of stream writes makes dies young instead of piling into the old generation, whose
    growth is what sets off full collections. Stopped, it is all as it was (tests make many
    apps in one process).
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(YOUNG_GC_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def worker_limits(settings: Settings) -> WorkerLimits:
    return WorkerLimits(
        max_jobs=settings.max_jobs_per_worker,
        max_memory_mb=settings.max_worker_memory_mb,
        max_result_bytes=settings.max_result_bytes,
        max_log_lines=settings.max_log_lines,
        stop_timeout_s=settings.worker_stop_timeout_s,
    )

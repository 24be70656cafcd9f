"""The service itself: its health (public, for load balancers), its figures and its workers."""

from __future__ import annotations

from quart import Blueprint, Response

from . import auth, models
from .models import answers
from .responses import json_response
from .runtime import runtime

service = Blueprint("service", __name__)


@service.get("/health")
@auth.public
@answers({200: models.Health, 503: models.Health})
async def health() -> Response:
    """Check the service: 200 when it can take and run jobs, 503 when not (or draining)."""
    rt = runtime()
    # public: without the token, counts only (no job ids, no tracebacks)
    checked = await rt.reads.health(public=auth.request_scope(rt.settings) is None)
    return json_response(checked.body, 200 if checked.ok else 503)


@service.get("/ready")
@auth.public
@answers({200: models.Ready, 503: models.Ready})
async def ready() -> Response:
    """Check readiness: 200 when the store takes writes and workers are alive, else 503 saying
    why (`/health` is for liveness)."""
    problems = await runtime().reads.ready()
    return json_response({"ready": not problems, "problems": problems}, 503 if problems else 200)


@service.get("/stats")
@answers({200: models.Stats})
async def stats() -> Response:
    """Count the stored jobs by state and queue, and those finished lately."""
    return json_response(runtime().reads.stats())


@service.get("/workers")
@answers({200: models.Workers})
async def workers() -> Response:
    """List the worker processes and the job each runs."""
    return json_response(await runtime().reads.workers())

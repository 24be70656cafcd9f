"""``/workflows``: chains and groups of jobs made together, read, followed and canceled as one."""

from __future__ import annotations

import time

from quart import Blueprint, Response
from quart_schema import document_request

from ..jobs import Job
from ..schemas import Flow, StreamQuery, count_steps
from ..wire import workflow_json
from . import auth, models
from .models import answers
from .responses import (
    InvalidRequest,
    json_body,
    json_response,
    last_event_id,
    query,
    sse_response,
)
from .runtime import runtime, within_submit_rate

MAX_WORKFLOW_JOBS = 10_000

workflows = Blueprint("workflows", __name__)


@workflows.post("/workflows")
@document_request(Flow)
@answers({202: models.Workflow}, 413, 415, 422, 429, 503)
async def create_workflow() -> Response:
    """Create a workflow: a chain or a group of steps (each a task call, or a chain or group
    in turn), all its jobs in one transaction. 202 with the workflow and every job's id."""
    flow = Flow.model_validate(await json_body())
    node = flow.node(time.time())
    jobs = count_steps(node)
    if jobs > MAX_WORKFLOW_JOBS:
        raise InvalidRequest(f"a workflow makes at most {MAX_WORKFLOW_JOBS} jobs, not {jobs}")
    within_submit_rate(jobs)
    rt = runtime()
    made = await rt.scheduler.submit_workflow(node)
    return json_response(workflow_json(made), 202, {"Location": f"/workflows/{made.id}"})


@workflows.get("/workflows/<workflow_id>")
@answers({200: models.Workflow}, 404)
async def get_workflow(workflow_id: str) -> Response:
    """Read a workflow: its state, its jobs and the edges between them, and its result."""
    return json_response(workflow_json(await runtime().reads.workflow(workflow_id)))


@workflows.post("/workflows/<workflow_id>/cancel")
@answers({200: models.Workflow}, 404, 503)
async def cancel_workflow(workflow_id: str) -> Response:
    """Cancel every job of the workflow that has not finished (running ones are killed)."""
    return json_response(workflow_json(await runtime().scheduler.cancel_workflow(workflow_id)))


@workflows.get("/workflows/<workflow_id>/events")
@answers({200: models.EventStream, 204: None}, 404, 503)
@auth.stream
@query(StreamQuery)
async def workflow_events(workflow_id: str, query: StreamQuery) -> Response:
    """Follow the events of a workflow's jobs; the stream ends once they have all finished
    (204 if they had already, with nothing after `Last-Event-ID`)."""
    rt = runtime()
    reads = rt.reads
    after_id = min(last_event_id(query) or 0, reads.last_event_id)
    jobs = (await reads.workflow(workflow_id)).jobs
    if _finished(jobs) and not await reads.workflow_has_events_after(workflow_id, after_id):
        return Response("", 204)
    keepalive_s = rt.settings.sse_keepalive_s
    stream = reads.workflow_stream(workflow_id, after_id=after_id, keepalive_s=keepalive_s)
    return sse_response(rt.streams.counted(stream))


def _finished(jobs: list[Job]) -> bool:
    return all(job.is_terminal for job in jobs)

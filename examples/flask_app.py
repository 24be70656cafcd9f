"""A Flask app that builds reports as Conveyor jobs and shows them live in the browser.

Start Conveyor with the example's task, then this app (both from the repository's root)::

    CONVEYOR_TASKS=examples.tasks conveyor serve                  # on 127.0.0.1:8000
    flask --app examples.flask_app run --port 8001                # threaded: streams don't block

    curl -si -X POST localhost:8001/reports -H 'Content-Type: application/json' -d '{"pages": 40}'

then open ``http://127.0.0.1:8001/reports/<id>/page``. The app finds Conveyor at
``CONVEYOR_URL`` (default ``http://127.0.0.1:8000``), with ``CONVEYOR_TOKEN`` if it has one; the
browser only ever talks to this app, which relays the job's events. Each open page holds one
of the server's threads while it streams, as any streamed response in Flask does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request, url_for
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, ConfigDict, Field, ValidationError

import conveyor
from examples.tasks import build_report

PAGE = (Path(__file__).parent / "report.html").read_text()

reports = Blueprint("reports", __name__)


def create_app() -> Flask:
    app = Flask(__name__)
    # one client for the app, shared by the request threads, which reuse its connections
    app.extensions["conveyor"] = conveyor.Client()
    app.register_blueprint(reports)
    app.register_error_handler(conveyor.ConveyorError, conveyor_error)
    return app


def conveyor_client() -> conveyor.Client:
    client: conveyor.Client = current_app.extensions["conveyor"]
    return client


class ReportRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")  # "40" is not a number of pages

    pages: int = Field(gt=0, le=1000)
    page_s: float = Field(default=0.2, gt=0, le=10)


@reports.post("/reports")
def create_report() -> ResponseReturnValue:
    try:
        body = ReportRequest.model_validate(request.get_json(silent=True))
    except ValidationError as exc:  # as FastAPI says it: where, and what is wrong
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        return jsonify(error="invalid_body", detail=errors), 400
    client = conveyor_client()
    job = client.submit(build_report, body.pages, page_s=body.page_s)
    answer = {
        "id": job.id,
        "conveyor_url": f"{client.url}/jobs/{job.id}",
        "page": url_for("reports.report_page", job_id=job.id),
    }
    return jsonify(answer), 202, {"Location": url_for("reports.report_status", job_id=job.id)}


@reports.get("/reports/<job_id>")
def report_status(job_id: str) -> dict[str, Any]:
    job = conveyor_client().job(job_id).status()
    error = job.error  # its type and message; the traceback stays with Conveyor
    return {
        "id": job.id,
        "state": job.state.value,
        "progress": None if job.progress is None else job.progress.as_dict(),
        "result": job.result,
        "error": None if error is None else {"type": error.type, "message": error.message},
    }


@reports.get("/reports/<job_id>/events")
def report_events(job_id: str) -> Response:
    """The job's events from Conveyor, relayed as Server-Sent Events; a reconnecting
    EventSource sends the last id it saw, and the relay resumes after it."""
    after_id = request.headers.get("Last-Event-ID", type=int)
    events = conveyor_client().job(job_id).events(after_id=after_id)
    first = next(events, None)  # here, so that NotFound is still a 404
    if first is None:
        return Response(status=204)  # it has ended and every event was seen: stop

    def relay() -> Iterator[str]:
        yield sse(first)
        for event in events:  # ends with the job's end
            yield sse(event)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Response(relay(), mimetype="text/event-stream", headers=headers)


def sse(event: conveyor.Event) -> str:
    return f"id: {event.id}\nevent: {event.kind}\ndata: {json.dumps(event.data)}\n\n"


@reports.get("/reports/<job_id>/page")
def report_page(job_id: str) -> str:
    return PAGE  # its script follows ./events


def conveyor_error(exc: conveyor.ConveyorError) -> tuple[Response, int]:
    """Conveyor's refusals as this app's own: 404 and 422 as they are, 503 when Conveyor cannot
    be reached or is busy, 502 for the rest (a token it refuses, say)."""
    if isinstance(exc, conveyor.NotFound | conveyor.InvalidArguments):
        return jsonify(error=exc.error, detail=exc.detail), exc.status
    if isinstance(exc, conveyor.ConnectionFailed | conveyor.ServiceUnavailable):
        return jsonify(error="unavailable", detail="the job service is down"), 503
    return jsonify(error="bad_gateway", detail="the job service refused"), 502

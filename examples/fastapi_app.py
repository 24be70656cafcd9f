"""A FastAPI app that builds reports as Conveyor jobs and shows them live in the browser.

Start Conveyor with the example's task, then this app (both from the repository's root)::

    CONVEYOR_TASKS=examples.tasks conveyor serve                  # on 127.0.0.1:8000
    hypercorn examples.fastapi_app:app --bind 127.0.0.1:8001      # or: uvicorn ... --port 8001

    curl -si -X POST localhost:8001/reports -H 'Content-Type: application/json' -d '{"pages": 40}'

then open ``http://127.0.0.1:8001/reports/<id>/page``. The app finds Conveyor at
``CONVEYOR_URL`` (default ``http://127.0.0.1:8000``), with ``CONVEYOR_TOKEN`` if it has one; the
browser only ever talks to this app, which relays the job's events.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

import conveyor
from examples.tasks import build_report

PAGE = (Path(__file__).parent / "report.html").read_text()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    async with conveyor.AsyncClient() as client:  # one pool of connections, closed at shutdown
        yield {"conveyor": client}


app = FastAPI(title="Reports", lifespan=lifespan)


def get_conveyor(request: Request) -> conveyor.AsyncClient:
    client: conveyor.AsyncClient = request.state.conveyor
    return client


ConveyorClient = Annotated[conveyor.AsyncClient, Depends(get_conveyor)]


class ReportRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")  # "40" is not a number of pages

    pages: int = Field(gt=0, le=1000)
    page_s: float = Field(default=0.2, gt=0, le=10)


@app.post("/reports", status_code=202)
async def create_report(
    body: ReportRequest, request: Request, response: Response, client: ConveyorClient
) -> dict[str, Any]:
    job = await client.submit(build_report, body.pages, page_s=body.page_s)
    response.headers["Location"] = str(request.url_for("report_status", job_id=job.id))
    return {
        "id": job.id,
        "conveyor_url": f"{client.url}/jobs/{job.id}",
        "page": str(request.url_for("report_page", job_id=job.id)),
    }


@app.get("/reports/{job_id}")
async def report_status(job_id: str, client: ConveyorClient) -> dict[str, Any]:
    job = await client.job(job_id).status()
    error = job.error  # its type and message; the traceback stays with Conveyor
    return {
        "id": job.id,
        "state": job.state.value,
        "progress": None if job.progress is None else job.progress.as_dict(),
        "result": job.result,
        "error": None if error is None else {"type": error.type, "message": error.message},
    }


@app.get("/reports/{job_id}/events")
async def report_events(
    job_id: str, client: ConveyorClient, last_event_id: Annotated[int | None, Header()] = None
) -> Response:
    """The job's events from Conveyor, relayed as Server-Sent Events; a reconnecting
    EventSource sends the last id it saw, and the relay resumes after it."""
    events = client.job(job_id).events(after_id=last_event_id)
    first = await anext(events, None)  # here, so that NotFound is still a 404
    if first is None:
        return Response(status_code=204)  # it has ended and every event was seen: stop

    async def relay() -> AsyncIterator[str]:
        yield sse(first)
        async for event in events:  # ends with the job's end
            yield sse(event)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(relay(), media_type="text/event-stream", headers=headers)


def sse(event: conveyor.Event) -> str:
    return f"id: {event.id}\nevent: {event.kind}\ndata: {json.dumps(event.data)}\n\n"


@app.get("/reports/{job_id}/page", response_class=HTMLResponse)
async def report_page(job_id: str) -> str:
    return PAGE  # its script follows ./events


@app.exception_handler(conveyor.ConveyorError)
async def conveyor_error(request: Request, exc: conveyor.ConveyorError) -> JSONResponse:
    """Conveyor's refusals as this app's own: 404 and 422 as they are, 503 when Conveyor cannot
    be reached or is busy, 502 for the rest (a token it refuses, say)."""
    if isinstance(exc, conveyor.NotFound | conveyor.InvalidArguments):
        return JSONResponse({"error": exc.error, "detail": exc.detail}, exc.status)
    if isinstance(exc, conveyor.ConnectionFailed | conveyor.ServiceUnavailable):
        return JSONResponse({"error": "unavailable", "detail": "the job service is down"}, 503)
    return JSONResponse({"error": "bad_gateway", "detail": "the job service refused"}, 502)

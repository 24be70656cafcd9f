"""``/schedules``: jobs made at every tick of a cron expression."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response
from quart_schema import document_request

from ..cron import Schedule
from ..schemas import CreateSchedule, schedule_json
from . import models
from .models import answers
from .responses import json_body, json_response
from .runtime import Runtime, runtime

schedules = Blueprint("schedules", __name__)


def _as_json(rt: Runtime, schedule: Schedule) -> dict[str, Any]:
    next_run_at = rt.schedules.next_run_at(schedule)
    return schedule_json(schedule, next_run_at=next_run_at, timezone=rt.settings.timezone)


@schedules.post("/schedules")
@document_request(CreateSchedule)
@answers({201: models.Schedule}, 409, 413, 415, 422, 503)
async def create_schedule() -> Response:
    """Create a schedule: a job at every tick of a cron expression."""
    data = CreateSchedule.model_validate(await json_body())
    rt = runtime()
    schedule = await rt.schedules.create(
        data.task, data.cron, args=data.args, kwargs=data.kwargs,
        options=data.job_options(), schedule_id=data.id,
    )  # fmt: skip
    location = {"Location": f"/schedules/{schedule.id}"}
    return json_response(_as_json(rt, schedule), 201, location)


@schedules.get("/schedules")
@answers({200: models.Schedules})
async def list_schedules() -> Response:
    """List the schedules, oldest first."""
    rt = runtime()
    await rt.schedules.refresh()
    return json_response({"schedules": [_as_json(rt, s) for s in rt.schedules.list_schedules()]})


# <path:...>: the id of a schedule declared in code holds its task's name, which may hold "/"
@schedules.get("/schedules/<path:schedule_id>")
@answers({200: models.Schedule}, 404)
async def get_schedule(schedule_id: str) -> Response:
    """Read a schedule, with its next and last tick."""
    rt = runtime()
    await rt.schedules.refresh()
    return json_response(_as_json(rt, rt.schedules.get(schedule_id)))


@schedules.delete("/schedules/<path:schedule_id>")
@answers({204: None}, 404, 409, 503)
async def delete_schedule(schedule_id: str) -> Response:
    """Delete a schedule made through the API (the jobs it made stay)."""
    await runtime().schedules.delete(schedule_id)
    return Response("", 204)


@schedules.post("/schedules/<path:schedule_id>/pause")
@answers({200: models.Schedule}, 404, 503)
async def pause_schedule(schedule_id: str) -> Response:
    """Pause a schedule: it makes no jobs until resumed (pausing a paused one changes nothing)."""
    rt = runtime()
    return json_response(_as_json(rt, await rt.schedules.pause(schedule_id)))


@schedules.post("/schedules/<path:schedule_id>/resume")
@answers({200: models.Schedule}, 404, 503)
async def resume_schedule(schedule_id: str) -> Response:
    """Resume a paused schedule from its first tick after now; the ticks passed make no job."""
    rt = runtime()
    return json_response(_as_json(rt, await rt.schedules.resume(schedule_id)))

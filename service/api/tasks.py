"""``/tasks``: the tasks this service runs, with their parameters and options."""

from __future__ import annotations

from quart import Blueprint, Response

from . import models
from .models import answers
from .responses import json_response
from .runtime import runtime

tasks = Blueprint("tasks", __name__)


@tasks.get("/tasks")
@answers({200: models.Tasks})
async def list_tasks() -> Response:
    """List the tasks this service runs, with their parameters and options, and how many of
    their jobs wait on a rate limit now (`held_by_rate`)."""
    scheduler = runtime().scheduler
    known, held = scheduler.tasks, await scheduler.held_by_rate()
    return json_response({
        "tasks": [{**known[name].describe(), "held_by_rate": held.get(name, 0)}
                  for name in sorted(known)]
    })  # fmt: skip

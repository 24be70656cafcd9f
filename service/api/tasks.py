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
    """List the tasks this service runs, with their parameters and options."""
    known = runtime().scheduler.tasks
    return json_response({"tasks": [known[name].describe() for name in sorted(known)]})

"""The stack's own ceiling: a bare Quart endpoint under the same hypercorn settings, that reads
a JSON body and answers ``202`` with a small JSON object, as ``POST /jobs`` does, but stores
nothing. ``python -m bench`` compares the service's submits with it, in the same run."""

from __future__ import annotations

import itertools

from quart import Quart, Response, request

app = Quart(__name__)
_ids = itertools.count()


@app.post("/jobs")
async def submit() -> tuple[dict[str, object], int]:
    body = await request.get_json()
    return {"id": str(next(_ids)), "task": body.get("task"), "state": "queued"}, 202


@app.get("/health")
async def health() -> Response:
    return Response('{"status": "ok"}', 200, content_type="application/json")

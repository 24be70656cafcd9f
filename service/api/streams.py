"""The event streams (Server-Sent Events): every job's, one job's, and the short-lived stream
tokens an ``EventSource`` opens them with."""

from __future__ import annotations

from quart import Blueprint, Response

from ..schemas import StreamQuery
from . import auth, models
from .models import answers
from .responses import json_response, last_event_id, query, sse_response
from .runtime import runtime, stream_tokens

streams = Blueprint("streams", __name__)


@streams.get("/jobs/<job_id>/events")
@answers({200: models.EventStream, 204: None}, 404, 503)
@auth.stream
@query(StreamQuery)
async def job_events(job_id: str, query: StreamQuery) -> Response:
    """Follow one job's events; the stream ends with its end (204 if it is over already)."""
    rt = runtime()
    reads = rt.reads
    after_id = min(last_event_id(query) or 0, reads.last_event_id)
    job = await reads.job(job_id)
    if job.is_terminal and not await reads.has_events_after(after_id, job_id):
        return Response("", 204)  # nothing more will come: EventSource stops reconnecting
    keepalive_s = rt.settings.sse_keepalive_s
    stream = reads.stream(after_id=after_id, job_id=job_id, keepalive_s=keepalive_s)
    return sse_response(rt.streams.counted(stream))


@streams.get("/events")
@answers({200: models.EventStream}, 503)
@auth.stream
@query(StreamQuery)
async def all_events(query: StreamQuery) -> Response:
    """Follow every job's events, from now or from `Last-Event-ID`."""
    rt = runtime()
    after_id = last_event_id(query)
    if after_id is None or after_id > rt.reads.last_event_id:
        # "now" is this request: what happens from here on is sent. An id the store never
        # gave out (it was replaced) must not make the client skip the events to come.
        after_id = rt.reads.last_event_id
    keepalive_s = rt.settings.sse_keepalive_s
    return sse_response(
        rt.streams.counted(rt.reads.stream(after_id=after_id, keepalive_s=keepalive_s))
    )


@streams.post("/stream-token")
@auth.reads
@answers({200: models.StreamToken})
async def stream_token() -> Response:
    """Get a short-lived token that opens the streams (for an `EventSource`).

    It carries the scope of the token it is asked with, which the answer names too: a page
    shows what the token may do.
    """
    tokens = stream_tokens()
    scope = auth.request_scope(runtime().settings) or auth.READ  # past the check: valid
    body = {"token": tokens.issue(scope), "expires_in_s": tokens.ttl_s, "scope": scope}
    return json_response(body)

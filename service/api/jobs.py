"""``/jobs``: submit, list, read, wait for, cancel and retry jobs, and read their logs."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import orjson
from quart import Blueprint, Response, request
from quart_schema import document_headers, document_request

from ..db import IdempotencyClaim
from ..jobs import Job
from ..schemas import IdempotencyHeaders, JobsQuery, LogsQuery, SubmitJob, SubmitJobs, WaitQuery
from ..wire import job_json
from . import models
from .models import answers
from .responses import InvalidRequest, json_body, json_response, query
from .runtime import runtime, within_submit_rate

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY_CHARS = 255
IDEMPOTENCY_TTL_S = 24 * 3600.0

jobs = Blueprint("jobs", __name__)


@jobs.post("/jobs")
@document_request(SubmitJob)
@document_headers(IdempotencyHeaders)
@answers({202: models.Job, 200: models.Job}, 409, 413, 415, 422, 429, 503)
@query(WaitQuery)
async def submit(query: WaitQuery) -> Response:
    """Submit a job.

    202 with the new job; 200 with the job its `key` or `Idempotency-Key` already has. With
    `?wait_s=`, the answer comes once the job has finished (or after that long).
    """
    body = await json_body()
    within_submit_rate(1)
    now = time.time()
    claim = _idempotency_claim(body, now)
    data = SubmitJob.model_validate(body)
    job, created = await runtime().scheduler.submit(data.spec(now), claim)
    job = await _waited(job, query)
    # 202: a new job; 200: the job this key or this request already has
    return json_response(job_json(job), 202 if created else 200, {"Location": f"/jobs/{job.id}"})


@jobs.post("/jobs/batch")
@document_request(SubmitJobs)
@document_headers(IdempotencyHeaders)
@answers({202: models.Batch, 200: models.Batch}, 409, 413, 415, 422, 429, 503)
async def submit_batch() -> Response:
    """Submit several jobs: all are created, or none (422 names the first refused)."""
    body = await json_body()
    now = time.time()
    claim = _idempotency_claim(body, now)
    data = SubmitJobs.model_validate(body)
    within_submit_rate(len(data.jobs))
    submitted = await runtime().scheduler.submit_many([j.spec(now) for j in data.jobs], claim)
    status = 202 if any(s.created for s in submitted) else 200
    return json_response({"jobs": [job_json(s.job) for s in submitted]}, status)


@jobs.get("/jobs")
@answers({200: models.JobPage})
@query(JobsQuery)
async def list_jobs(query: JobsQuery) -> Response:
    """List jobs, newest first, by state, task, queue, schedule or text in their arguments."""
    try:
        states, before, fields = query.states(), query.before(), query.job_fields()
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    page = await runtime().reads.jobs(
        states=states, task=query.task, queue=query.queue, text=query.q,
        schedule_id=query.schedule, limit=query.limit, before=before,
    )  # fmt: skip
    next_page = None if page.next_cursor is None else str(page.next_cursor)
    jobs = [job_json(j) for j in page.jobs]
    if fields is not None:
        jobs = [{k: v for k, v in job.items() if k in fields} for job in jobs]
    return json_response({"jobs": jobs, "next": next_page})


@jobs.get("/jobs/<job_id>")
@answers({200: models.Job}, 404)
@query(WaitQuery)
async def get_job(job_id: str, query: WaitQuery) -> Response:
    """Read a job; with `?wait_s=`, once it has finished (or after that long)."""
    job = await _waited(await runtime().reads.job(job_id), query)
    return json_response(job_json(job))


@jobs.get("/jobs/<job_id>/logs")
@answers({200: models.Logs}, 404)
@query(LogsQuery)
async def job_logs(job_id: str, query: LogsQuery) -> Response:
    """Read a job's output: its stdout, stderr and log records, each with its attempt."""
    entries, dropped = await runtime().reads.logs(job_id, tail=query.tail)
    body = {"job_id": job_id, "entries": [e.as_json() for e in entries], "dropped": dropped}
    return json_response(body)


@jobs.post("/jobs/<job_id>/cancel")
@answers({200: models.Job}, 404, 409)
async def cancel(job_id: str) -> Response:
    """Cancel a job: answered once it is canceled and its processes are gone."""
    return json_response(job_json(await runtime().scheduler.cancel(job_id)))


@jobs.post("/jobs/<job_id>/retry")
@answers({200: models.Job}, 404, 409, 503)
async def retry(job_id: str) -> Response:
    """Run a failed or canceled job again: the same job, a new attempt."""
    return json_response(job_json(await runtime().scheduler.retry(job_id)))


async def _waited(job: Job, query: WaitQuery) -> Job:
    """The job once finished, or as it stands after ``wait_s`` (capped), if asked to wait."""
    if not query.wait_s:
        return job
    rt = runtime()
    return await rt.reads.finished(job, min(query.wait_s, rt.settings.max_wait_s))


def _idempotency_claim(body: Any, now: float) -> IdempotencyClaim | None:
    """The request's ``Idempotency-Key`` header with a digest of what it asks for."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_CHARS or not key.isprintable():
        raise InvalidRequest(
            f"{IDEMPOTENCY_HEADER}: expected 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable characters"
        )
    # the same request however its JSON is spaced or ordered
    canonical = orjson.dumps([request.path, body], option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(canonical).hexdigest()
    return IdempotencyClaim(key, digest, now, IDEMPOTENCY_TTL_S)

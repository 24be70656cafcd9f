"""What every answer carries, whoever asks and whatever for."""

from __future__ import annotations

import httpx
import pytest

from .conftest import submit_job

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/jobs"),
        ("GET", "/jobs/{id}"),
        ("POST", "/jobs/{id}/cancel"),  # a 409: it has finished
        ("GET", "/jobs/{id}/events"),  # a 204: it has finished
        ("GET", "/health"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/docs/files/swagger-ui.css"),
        ("GET", "/"),
        ("GET", "/static/app.js"),
        ("GET", "/no/such/page"),
        ("GET", "/jobs?bogus=1"),
    ],
)
async def test_every_answer_has_the_security_headers(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    job_id = await submit_job(client, "add", 1, 2)
    await client.get(f"/jobs/{job_id}", params={"wait_s": 10})
    response = await client.request(method, path.format(id=job_id))
    assert {k: response.headers.get(k) for k in SECURITY_HEADERS} == SECURITY_HEADERS


async def test_only_pages_carry_a_content_security_policy(client: httpx.AsyncClient) -> None:
    for path in ("/", "/docs"):
        policy = (await client.get(path)).headers["content-security-policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "content-security-policy" not in (await client.get("/jobs")).headers

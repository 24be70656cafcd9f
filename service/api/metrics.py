"""``/metrics``: the service's figures for Prometheus (a token is needed when one is set)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from quart import Blueprint, Response

from .models import answers
from .runtime import runtime

metrics = Blueprint("metrics", __name__)


class MetricsText(BaseModel):
    """Prometheus' text format (``text/plain; version=0.0.4``); ``service.api.docs`` writes
    its content."""


@metrics.get("/metrics")
@answers({200: MetricsText})
async def scrape() -> Response:
    """Scrape the service's figures, in Prometheus' text format."""
    return Response(runtime().metrics.text(), 200, content_type=CONTENT_TYPE_LATEST)

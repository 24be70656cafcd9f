"""The dashboard: one page and its files, public (the page is what asks for the token)."""

from __future__ import annotations

from pathlib import Path

from quart import Blueprint, Response, send_from_directory
from quart_schema import hide

from . import auth
from .responses import PAGE_HEADERS

STATIC = Path(__file__).resolve().parent.parent / "static"
dashboard = Blueprint("dashboard", __name__)


@dashboard.get("/")
@auth.public
@hide  # not part of the API
async def page() -> Response:
    return _fresh(await send_from_directory(STATIC, "index.html"), PAGE_HEADERS)


@dashboard.get("/static/<path:filename>")
@auth.public
@hide
async def files(filename: str) -> Response:
    return _fresh(await send_from_directory(STATIC, filename), {})


def _fresh(response: Response, headers: dict[str, str]) -> Response:
    # checked again each time (a 304 while unchanged): after an upgrade, no browser runs old
    # modules beside new ones
    response.headers["Cache-Control"] = "no-cache"
    response.headers.update(headers)
    return response

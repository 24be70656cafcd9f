"""Who may do what: with ``CONVEYOR_TOKEN`` set, every route needs ``Authorization: Bearer``,
except those marked ``public`` (the dashboard's files, health, the API's documentation) and a
stream opened with a short-lived stream token (an ``EventSource`` cannot send headers)."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any, TypeVar

from quart import Quart, Response, current_app, request
from quart_schema import security_scheme

from ..settings import Settings
from ..streamtokens import StreamTokens
from .responses import error_response

F = TypeVar("F", bound=Callable[..., Any])

_PUBLIC = "conveyor_public"
_STREAM = "conveyor_stream"


def public(view: F) -> F:
    """Mark a route that needs no token (the API's document says so too)."""
    setattr(view, _PUBLIC, True)
    return security_scheme([])(view)


def stream(view: F) -> F:
    """Mark a stream: a stream token in its ``token`` query parameter lets it in."""
    setattr(view, _STREAM, True)
    return security_scheme([{"bearer": []}, {"streamToken": []}])(view)


def has_token(settings: Settings) -> bool:
    """Whether the request may see jobs: no token configured, or the right one sent."""
    if settings.token is None:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # compare_digest takes as long whatever the token; the scheme is case-insensitive (RFC 7235)
    right = hmac.compare_digest(given.strip().encode(), settings.token.encode())
    return right and scheme.lower() == "bearer"


def unauthorized() -> Response:
    response = error_response(
        401, "unauthorized", "send the token as 'Authorization: Bearer <token>'"
    )
    response.headers["WWW-Authenticate"] = 'Bearer realm="conveyor"'
    return response


def install(app: Quart, settings: Settings, tokens: StreamTokens) -> None:
    if settings.token is None:
        return

    @app.before_request
    async def require_token() -> Response | None:
        view = current_app.view_functions.get(request.endpoint or "")
        if view is None or getattr(view, _PUBLIC, False) or has_token(settings):
            return None  # no such route: its 404 (or 405) tells nothing
        if getattr(view, _STREAM, False) and tokens.valid(request.args.get("token", "")):
            return None
        return unauthorized()

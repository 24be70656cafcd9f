"""Who may do what.

With tokens set (``CONVEYOR_TOKEN``, a write token; ``CONVEYOR_TOKENS``, ``scope:token`` pairs),
every route needs ``Authorization: Bearer <token>``, except those marked ``public`` (the
dashboard's files, health, the API's documentation). A ``read`` token may call what only looks
(every GET, the streams, and ``POST /stream-token``, marked ``reads``); the rest needs a
``write`` token: no or a wrong token is a ``401``, a read token on a write route a ``403``. A
stream also opens with a short-lived stream token (an ``EventSource`` cannot send headers),
which carries the scope of the token it was asked with.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from quart import Quart, Response, current_app, request
from quart_schema import security_scheme

from ..settings import Settings
from ..streamtokens import StreamTokens
from .hosts import on_loopback
from .responses import error_response

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("conveyor")

READ, WRITE = "read", "write"
LOOKING = frozenset({"GET", "HEAD", "OPTIONS"})
_PUBLIC = "conveyor_public"
_STREAM = "conveyor_stream"
_READS = "conveyor_reads"


def public(view: F) -> F:
    """Mark a route that needs no token (the API's document says so too)."""
    setattr(view, _PUBLIC, True)
    return security_scheme([])(view)


def stream(view: F) -> F:
    """Mark a stream: a stream token in its ``token`` query parameter lets it in."""
    setattr(view, _STREAM, True)
    return security_scheme([{"bearer": []}, {"streamToken": []}])(view)


def reads(view: F) -> F:
    """Mark a route that changes nothing although its method is not GET: a read token will do."""
    setattr(view, _READS, True)
    return view


def scope_of(tokens: Mapping[str, str], authorization: str) -> str | None:
    """The scope of the token an ``Authorization`` header sends; None if it sends none of
    ``tokens``. Every token is compared, in constant time: how long it takes tells nothing."""
    scheme, _, given = authorization.partition(" ")
    sent = given.strip().encode()
    found = None
    for token, scope in tokens.items():
        if hmac.compare_digest(sent, token.encode()):
            found = scope
    return found if scheme.lower() == "bearer" else None  # the scheme: any case (RFC 7235)


def request_scope(settings: Settings) -> str | None:
    """What the request may do: ``write`` when no token is set; None without a valid token."""
    tokens = settings.scoped_tokens
    if not tokens:
        return WRITE
    return scope_of(tokens, request.headers.get("Authorization", ""))


def unauthorized() -> Response:
    response = error_response(
        401, "unauthorized", "send the token as 'Authorization: Bearer <token>'"
    )
    response.headers["WWW-Authenticate"] = 'Bearer realm="conveyor"'
    return response


def forbidden() -> Response:
    detail = (
        "this token may only read; submitting, canceling, retrying and changing schedules "
        "need a write token"
    )
    return error_response(403, "forbidden", detail)


def install(app: Quart, settings: Settings, stream_tokens: StreamTokens) -> None:
    tokens = settings.scoped_tokens
    if not tokens:
        _warn_when_open(app)
        return

    @app.before_request
    async def require_token() -> Response | None:
        view = current_app.view_functions.get(request.endpoint or "")
        if view is None or getattr(view, _PUBLIC, False) or request.method == "OPTIONS":
            return None  # no such route: its 404 (or 405) tells nothing; a CORS preflight
            # carries no token, and only says what the request after it may send
        scope = scope_of(tokens, request.headers.get("Authorization", ""))
        if scope is None and getattr(view, _STREAM, False):
            scope = stream_tokens.scope(request.args.get("token", ""))
        if scope is None:
            return unauthorized()
        looks = request.method in LOOKING or getattr(view, _READS, False)
        return None if looks or scope == WRITE else forbidden()


def _warn_when_open(app: Quart) -> None:
    """Say so, once, when a service with no token turns out to listen beyond this machine (the
    app learns its address from the first request that comes in through it)."""
    warned = False

    @app.before_request
    async def warn_once() -> None:
        nonlocal warned
        if warned or request.server is None or on_loopback(request.server[0]):
            return
        warned = True
        log.warning(
            "listening on %s with no token set: anyone who reaches it can run and cancel jobs; "
            "set CONVEYOR_TOKEN (or CONVEYOR_TOKENS)", request.server[0],
        )  # fmt: skip

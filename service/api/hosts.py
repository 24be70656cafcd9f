"""Which ``Host`` names the service answers to.

A service on a loopback address with no token is open to any page its user's browser runs, if
that page can make the browser send it requests under a name of its own that resolves to
127.0.0.1 (DNS rebinding): the browser thinks it talks to the page's own origin. Answering only
the loopback names there closes that; ``CONVEYOR_ALLOWED_HOSTS`` names others.
"""

from __future__ import annotations

import functools
import ipaddress

from quart import Quart, Response, request

from ..settings import Settings
from .responses import error_response

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def host_name(host: str) -> str:
    """The name in a ``Host`` header: without its port or an IPv6 address's brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rpartition(":")[0] if host.count(":") == 1 else host


@functools.lru_cache(maxsize=64)  # asked at every request, of the few addresses it listens on
def on_loopback(address: str | None) -> bool:
    """Whether a socket address is reachable from this machine only."""
    if address is None:
        return True  # no socket address (a test client): as the default bind, loopback
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # a unix socket's path: only this machine reaches it
        return True


def allowed(name: str, configured: tuple[str, ...] | None, server_address: str | None) -> bool:
    if configured is None:
        if not on_loopback(server_address):
            return True
        return name in LOOPBACK_NAMES or name.endswith(".localhost")
    return any(
        entry == "*"
        or name == entry.strip("[]")
        or (entry.startswith(".") and name.endswith(entry))
        for entry in configured
    )


def install(app: Quart, settings: Settings) -> None:
    @app.before_request
    async def check_host() -> Response | None:
        name = host_name(request.headers.get("Host", ""))
        address = request.server[0] if request.server else None
        if not name or allowed(name, settings.allowed_hosts, address):
            return None
        detail = (
            f"this service does not answer to the host {name!r}; name it in "
            "CONVEYOR_ALLOWED_HOSTS to allow it"
        )
        return error_response(400, "invalid_host", detail)

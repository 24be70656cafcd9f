"""Where the client connects and as whom: arguments first, then ``CONVEYOR_URL`` and
``CONVEYOR_TOKEN``, then the service's own default address."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from .errors import RequestError

DEFAULT_URL = "http://127.0.0.1:8000"
VERSION = "0.1.0"


@dataclass(frozen=True, slots=True)
class ClientSettings:
    url: str
    token: str | None
    timeout_s: float

    @classmethod
    def resolve(
        cls,
        url: str | None,
        token: str | None,
        timeout_s: float,
        environ: Mapping[str, str] = os.environ,
    ) -> ClientSettings:
        url = (url or environ.get("CONVEYOR_URL") or DEFAULT_URL).rstrip("/")
        if "://" not in url:
            url = f"http://{url}"  # "127.0.0.1:8000", as hypercorn's bind is written
        # "" is no token, as an unset variable is: never an empty "Bearer " header
        token = (token if token is not None else environ.get("CONVEYOR_TOKEN")) or None
        if not timeout_s > 0:
            raise RequestError(f"timeout_s must be a number of seconds > 0, got {timeout_s!r}")
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise RequestError(f"not a URL: {url!r} ({exc})") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise RequestError(f"not an http(s) URL of a host: {url!r}")
        if token is not None and not (token.isascii() and token.isprintable()):
            raise RequestError("the token must be printable ASCII (it travels in a header)")
        return cls(url, token, timeout_s)

    def headers(self) -> dict[str, str]:
        headers = {"User-Agent": f"conveyor-client/{VERSION}", "Accept": "application/json"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

"""Short-lived signed tokens that let an ``EventSource`` into a stream.

A browser's EventSource cannot send an Authorization header, and the service's token must never
sit in a URL (URLs end up in access logs and browser history). A client that holds the token
asks ``POST /stream-token`` for a signed, expiring token instead and puts that in the stream's
query: leaked from a log, it is worthless within a minute and opens nothing but streams.
"""

from __future__ import annotations

import hashlib
import secrets

from itsdangerous import BadSignature, TimestampSigner

STREAM_TOKEN_TTL_S = 60
_SCOPE = b"stream"


class StreamTokens:
    def __init__(self, secret: str | None, ttl_s: int = STREAM_TOKEN_TTL_S) -> None:
        # no token configured: a secret of this process's own, so the same calls work either way
        key = secret if secret is not None else secrets.token_hex(32)
        self._signer = TimestampSigner(key, salt="conveyor.stream", digest_method=hashlib.sha256)
        self.ttl_s = ttl_s

    def issue(self, scope: str = "write") -> str:
        """A stream token that carries ``scope``, the scope of the token it was asked with."""
        return self._signer.sign(_SCOPE + b":" + scope.encode()).decode()

    def scope(self, token: str) -> str | None:
        """The scope ``token`` carries, if it was issued here (with this secret) less than
        ``ttl_s`` ago; None otherwise."""
        try:
            signed = self._signer.unsign(token, max_age=self.ttl_s)
        except BadSignature:  # also SignatureExpired, its subclass
            return None
        kind, _, scope = signed.partition(b":")
        return scope.decode() if kind == _SCOPE and scope else None

    def valid(self, token: str) -> bool:
        return self.scope(token) is not None

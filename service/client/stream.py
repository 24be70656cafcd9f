"""Following a stream or waiting for a job: where a stream is (``StreamCursor``), how long a
wait may still take and how each long poll asks for its part of it (``Deadline``), and when a
dropped connection is tried again (``Reconnects``); no I/O of its own."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from .api import connection_failed, error_of, segment, unexpected
from .errors import ApiError
from .events import Event, StateEvent, decode

STREAM_IDLE_S = 60.0  # no byte for this long (keep-alives come every 15 s): reconnect
RECONNECT_FOR_S = 60.0  # a dropped stream is tried again for this long before giving up
RECONNECT_DELAYS_S = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
# One long poll's ``wait_s``: below the service's cap (CONVEYOR_MAX_WAIT_S, 55 s by default) and
# the 60 s after which proxies commonly cut a quiet response, so neither ends it first.
LONG_POLL_S = 30.0
# A long poll that asks for the rest of the deadline is answered as the deadline passes; this
# long after it, its answer is given up (WaitTimeout) rather than awaited for the full timeout_s.
LATE_ANSWER_S = 0.5


class StreamCursor:
    """Where a stream is, so that a new connection resumes it (``Last-Event-ID``) and knows
    when it has ended: a job's stream ends after the terminal event nothing follows."""

    def __init__(self, job_id: str | None = None, after_id: int | None = None) -> None:
        self.job_id = job_id
        self.last_id = after_id
        self.ended = False
        self._after_terminal = False

    @property
    def path(self) -> str:
        return "/events" if self.job_id is None else f"/jobs/{segment(self.job_id)}/events"

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        if self.last_id is not None:
            headers["Last-Event-ID"] = str(self.last_id)
        return headers

    def feed(self, kind: str, data: str, event_id: str) -> Event | None:
        """The event of one SSE message (None for a position, keep-alive or retry message)."""
        if event_id.isdigit():
            self.last_id = int(event_id)
        if self.last_id is None:
            return None
        try:
            event = decode(kind, data, self.last_id)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            detail = f"not an event of Conveyor's ({exc!r}): {data[:100]!r}"
            raise ApiError(200, "unexpected_response", detail, {}) from None
        if event is not None:
            self._after_terminal = isinstance(event, StateEvent) and event.is_terminal
        return event

    def closed(self) -> None:
        """The service closed the stream: the end, or a drop (it is stopping) to resume from."""
        if self.job_id is not None and self._after_terminal:
            self.ended = True

    @staticmethod
    def check(response: httpx.Response) -> None:
        """ApiError unless ``response`` is an event stream (a proxy may answer with a page)."""
        kind = response.headers.get("content-type", "").partition(";")[0].strip()
        if kind != "text/event-stream":
            raise unexpected(response, f"expected an event stream, got {kind or 'no type'!r}")

    def no_content(self) -> None:
        """204: the job has finished and every event of it was seen."""
        self.ended = True


class WorkflowCursor(StreamCursor):
    """Where a workflow's stream is: the service ends it once all of the workflow's jobs have
    finished (or when it stops: whoever follows it asks the workflow's state then)."""

    def __init__(self, workflow_id: str, after_id: int | None = None) -> None:
        super().__init__(None, after_id)
        self.workflow_id = workflow_id

    @property
    def path(self) -> str:
        return f"/workflows/{segment(self.workflow_id)}/events"

    def closed(self) -> None:
        self.ended = True


class Deadline:
    """How long a wait may still take; None: for ever."""

    def __init__(self, timeout_s: float | None, clock: Callable[[], float] = time.monotonic):
        self.timeout_s = timeout_s
        self._clock = clock
        self._end = None if timeout_s is None else clock() + timeout_s

    def remaining_s(self) -> float | None:
        return None if self._end is None else max(0.0, self._end - self._clock())

    @property
    def expired(self) -> bool:
        return self._end is not None and self._clock() >= self._end

    def stream_timeout(self, request_timeout_s: float) -> httpx.Timeout:
        """A stream's timeouts: connecting and its answer within the deadline too, each read
        within ``STREAM_IDLE_S`` (keep-alives come every 15 s)."""
        remaining = self.remaining_s()
        if remaining is None:
            return httpx.Timeout(request_timeout_s, read=STREAM_IDLE_S)
        remaining = max(remaining, 0.001)
        return httpx.Timeout(min(request_timeout_s, remaining), read=min(STREAM_IDLE_S, remaining))

    def long_poll(self, request_timeout_s: float) -> tuple[float, httpx.Timeout]:
        """The next long poll's ``wait_s`` (``LONG_POLL_S``, or what remains of the deadline if
        less) and its request's timeouts: the answer may take ``request_timeout_s`` beyond the
        wait, for the service answers only once the wait is over; never more than
        ``LATE_ANSWER_S`` beyond the deadline."""
        remaining = self.remaining_s()
        wait_s = LONG_POLL_S if remaining is None else min(remaining, LONG_POLL_S)
        answer_s = wait_s + request_timeout_s
        connect_s = request_timeout_s
        if remaining is not None:
            answer_s = min(answer_s, remaining + LATE_ANSWER_S)
            connect_s = min(connect_s, remaining + LATE_ANSWER_S)
        # the other waits of this client hold connections for as long: a poll queues for one
        return wait_s, httpx.Timeout(connect_s, read=answer_s, pool=answer_s)


class Transient(Exception):
    """A reopened stream (or a long poll asked again) was answered 502, 503 or 504: a proxy in
    front of a restarting service, say. It is tried again like a refused connection."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        super().__init__(str(error))


TRANSIENT_STATUSES = frozenset({502, 503, 504})


class Reconnects:
    """The waits between attempts to reopen a dropped stream (or to ask again after a long poll
    was cut or refused), and when to give up."""

    def __init__(self, url: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._url = url
        self._clock = clock
        self._connected_once = False
        self._failing_since: float | None = None
        self._failures = 0

    def connected(self) -> None:
        self._connected_once = True
        self._failing_since = None
        self._failures = 0

    def answered(self, response: httpx.Response) -> None:
        """Raise what an error answer means (as ``refused``); a success: the service is there."""
        if not response.is_success:
            raise self.refused(response)
        self.connected()

    def refused(self, response: httpx.Response) -> Exception:
        """What an error answer means: the end, or (once the service had answered) a proxy's
        passing refusal to try again."""
        error = error_of(response)
        if self._connected_once and response.status_code in TRANSIENT_STATUSES:
            return Transient(error)
        return error

    def delay_s(self, exc: httpx.TransportError | Transient) -> float:
        """The wait before the next attempt; ConnectionFailed if the first connection failed,
        or the service has been unreachable for ``RECONNECT_FOR_S``."""
        now = self._clock()
        if self._failing_since is None:
            self._failing_since = now
        if isinstance(exc, httpx.ReadError | httpx.RemoteProtocolError):
            # the service took the connection and lost it (a long poll, or a stream before its
            # first byte): it is there and restarting, not a wrong address
            self._connected_once = True
        if not self._connected_once or now - self._failing_since > RECONNECT_FOR_S:
            if isinstance(exc, Transient):
                raise exc.error from None
            raise connection_failed(self._url, exc) from None
        delay = RECONNECT_DELAYS_S[min(self._failures, len(RECONNECT_DELAYS_S) - 1)]
        self._failures += 1
        return delay

    def pause_s(self, exc: httpx.TransportError | Transient, deadline: Deadline) -> float:
        """The wait before trying again after ``exc``: none once ``deadline`` has passed (the
        caller then gives up with WaitTimeout) or after silence (a stream that sent nothing for
        ``STREAM_IDLE_S``, a long poll unanswered), else the next of ``delay_s`` (which raises
        when it is time to give up), cut short by the deadline."""
        if deadline.expired or isinstance(exc, httpx.ReadTimeout):
            return 0.0
        delay = self.delay_s(exc)
        remaining = deadline.remaining_s()
        return delay if remaining is None else min(delay, remaining)

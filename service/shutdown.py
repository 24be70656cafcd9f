"""Graceful shutdown: on SIGTERM, drain while still serving, then let hypercorn stop.

hypercorn's own SIGTERM handler would close the listening sockets first, so nobody could cancel
a job during the drain. The service takes SIGTERM over instead: it stops starting jobs, answers
every request (new submits get 503), gives running jobs their grace, ends the event streams
(so hypercorn need not wait for them) and only then hands over with SIGINT, hypercorn's other
stop signal. The lifecycle's exit then kills and requeues whatever still runs.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable

from .events import Broker
from .scheduler import Scheduler

log = logging.getLogger("conveyor")


def _stop_serving() -> None:
    signal.raise_signal(signal.SIGINT)


class GracefulShutdown:
    def __init__(
        self,
        scheduler: Scheduler,
        broker: Broker,
        *,
        grace_s: float,
        stop_serving: Callable[[], None] = _stop_serving,
    ) -> None:
        self._scheduler = scheduler
        self._broker = broker
        self._grace_s = grace_s
        self._stop_serving = stop_serving
        self._hurry = asyncio.Event()  # a second SIGTERM: stop waiting
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def install(self) -> None:
        """Take SIGTERM over (only the main thread can handle signals)."""
        if threading.current_thread() is not threading.main_thread():
            return
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self.begin)

    def stopping(self) -> None:
        """The service is stopping by now (SIGINT, or after the drain): a SIGTERM that comes
        while running jobs are being stopped and requeued must not cut that short, so the
        handler stays and does nothing more."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()

    def begin(self) -> None:
        """Start draining; called again (a second SIGTERM), stop waiting for running jobs."""
        if self._stopping:
            log.info("SIGTERM: already stopping")
        elif self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())
        else:
            self._hurry.set()

    async def _drain(self) -> None:
        log.info(
            "SIGTERM: taking no new jobs; running jobs have %g s to finish "
            "(CONVEYOR_SHUTDOWN_GRACE_S); SIGTERM again to stop them now",
            self._grace_s,
        )
        try:
            left = await self._scheduler.drain(self._grace_s, self._hurry)
            if left:
                log.warning("%d job(s) still running: stopping and requeueing them", left)
            self._broker.close()
        finally:
            self._stop_serving()

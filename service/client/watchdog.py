"""One thread per process that runs callbacks at their time: the deadlines of blocking waits.

A sync stream read cannot be given a deadline of its own, so a wait with one asks the watchdog
to cut its connection then. One long-lived thread serves every wait: starting a thread per wait
cost more than the rest of a short job's wait together.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger("conveyor.client")


class Watchdog:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._due: list[tuple[float, int]] = []  # a heap of (when, number)
        self._pending: dict[int, Callable[[], None]] = {}
        self._numbers = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        # a forked child has no thread of ours, and maybe a lock held by one: start afresh
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._due, self._pending = [], {}
        self._wake = threading.Condition()
        self._thread = None

    def call_at(self, when: float, callback: Callable[[], None]) -> int:
        """Run ``callback`` on the watchdog's thread at ``when`` (this clock); its number."""
        with self._wake:
            number = next(self._numbers)
            self._pending[number] = callback
            heapq.heappush(self._due, (when, number))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="conveyor-watchdog")
                self._thread.daemon = True  # it holds no state worth finishing at exit
                self._thread.start()
            self._wake.notify()
            return number

    def cancel(self, number: int) -> None:
        with self._wake:
            self._pending.pop(number, None)
            if len(self._due) > 2 * len(self._pending) + 64:
                # mostly canceled waits (a long timeout that was not needed): drop them now
                self._due = [entry for entry in self._due if entry[1] in self._pending]
                heapq.heapify(self._due)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._due or self._due[0][0] > self._clock():
                    wait_s = None if not self._due else self._due[0][0] - self._clock()
                    self._wake.wait(wait_s)
                _, number = heapq.heappop(self._due)
                callback = self._pending.pop(number, None)
                if callback is not None:
                    # under the lock: once cancel() has returned, its callback is not running
                    try:
                        callback()
                    except Exception:  # one failing cut must not stop the others
                        log.exception("a deadline's callback failed")


watchdog = Watchdog()  # the process's one: waits from every client and thread share it

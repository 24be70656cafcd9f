"""The client's watchdog: one thread runs callbacks at their time and forgets canceled ones."""

from __future__ import annotations

import threading
import time

from service.client.watchdog import Watchdog


def test_callbacks_run_in_time_order_and_canceled_ones_never() -> None:
    watchdog = Watchdog()
    ran: list[str] = []
    done = threading.Event()
    now = time.monotonic()

    def last() -> None:
        ran.append("late")
        done.set()

    watchdog.call_at(now + 0.2, last)
    watchdog.call_at(now + 0.05, lambda: ran.append("early"))
    canceled = watchdog.call_at(now + 0.1, lambda: ran.append("canceled"))
    watchdog.cancel(canceled)
    assert done.wait(5)
    assert ran == ["early", "late"]


def test_canceled_entries_do_not_pile_up() -> None:
    watchdog = Watchdog()
    far = time.monotonic() + 3600
    for _ in range(10_000):
        watchdog.cancel(watchdog.call_at(far, lambda: None))
    assert len(watchdog._due) <= 64 + 2 and not watchdog._pending

"""The task the example apps submit: ``reports.build``, a report built a page at a time.

Conveyor serves it when started with this module as its tasks (from the repository's root)::

    CONVEYOR_TASKS=examples.tasks conveyor serve
"""

from __future__ import annotations

import time

from conveyor import progress, task


@task(name="reports.build")
def build_report(pages: int, page_s: float = 0.2) -> dict[str, int]:
    """Build ``pages`` pages, ``page_s`` seconds each, reporting progress after each page."""
    for i in range(pages):
        time.sleep(page_s)  # the work of one page
        progress(i + 1, pages, f"page {i + 1}")
    return {"pages": pages}

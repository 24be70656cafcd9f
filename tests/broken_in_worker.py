"""A task module that imports in the service but not in a worker (a missing GPU driver, say)."""

import sys

from service import task

if sys.argv and sys.argv[0].endswith("worker.py"):
    raise ImportError("libcuda.so.1: cannot open shared object file")


@task
def never() -> None:
    """Never runs: no worker can import this module."""

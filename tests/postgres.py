"""The tests' PostgreSQL: a throwaway server (``bench/pgcluster.py``) started once for the
session when a test first needs it; each test gets its one database, emptied first."""

from __future__ import annotations

import os

import pytest

from bench.pgcluster import BINARIES, Cluster, cluster

__all__ = ["HAVE_POSTGRES", "Cluster", "cluster", "needs_postgres"]

# without it the PostgreSQL tests skip, except in CI, which installs it and must run them
HAVE_POSTGRES = bool(BINARIES) or os.environ.get("CI") == "true"
needs_postgres = pytest.mark.skipif(
    not HAVE_POSTGRES,
    reason="needs PostgreSQL's server (apt-get install postgresql); CI installs it and runs them",
)

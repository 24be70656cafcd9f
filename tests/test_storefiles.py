"""The files beside the database: the one-service lock and the start journal."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.errors import StoreUnavailable
from service.storefiles import JOURNAL_TRUNCATE_BYTES, StartJournal, lock_database


def test_the_lock_admits_one_holder_at_a_time(tmp_path: Path) -> None:
    path = str(tmp_path / "jobs.db")
    fd = lock_database(path)
    with pytest.raises(StoreUnavailable, match="another Conveyor service"):
        lock_database(path)
    os.close(fd)
    os.close(lock_database(path))  # free again once the holder lets go


def test_the_journal_reads_back_what_was_appended(tmp_path: Path) -> None:
    journal = StartJournal(str(tmp_path / "jobs.db.started"))
    assert journal.read() == []
    journal.append("a", 1)
    journal.append("b", 3)
    with open(journal.path, "ab") as f:
        f.write(b"c ")  # a line cut short by a crash
    assert journal.read() == [("a", 1), ("b", 3)]
    journal.clear()
    assert journal.read() == []


def test_the_journal_empties_once_everything_in_it_is_recorded(tmp_path: Path) -> None:
    journal = StartJournal(str(tmp_path / "jobs.db.started"))
    count = JOURNAL_TRUNCATE_BYTES // 10 + 1
    for n in range(count):
        journal.append(f"job-{n:05}", 1)
    for _ in range(count - 1):
        journal.recorded()
    assert len(journal.read()) == count  # one start is still unrecorded: keep them all
    journal.recorded()
    assert journal.read() == []


def test_a_clean_close_empties_it_but_not_with_starts_unrecorded(tmp_path: Path) -> None:
    clean = StartJournal(str(tmp_path / "clean.started"))
    clean.append("a", 1)
    clean.recorded()
    clean.close()
    assert clean.read() == []
    crashed = StartJournal(str(tmp_path / "crashed.started"))
    crashed.append("a", 1)
    crashed.close()
    assert crashed.read() == [("a", 1)]

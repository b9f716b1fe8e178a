"""Reading a view file (xcombus.view) while it is missing or being created (no broker)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from xcombus import Settings, XComBus, XComViewError
from xcombus.consistency import ViewPoller
from xcombus.errors import ViewNotReadyError
from xcombus.store import ViewStore
from xcombus.view import ViewReader


def test_missing_view_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(XComViewError, match="start the materializer"):
        ViewReader(tmp_path / "absent.db")


async def test_a_view_being_created_reads_as_nothing_applied_yet(tmp_path: Path) -> None:
    """Read-your-writes polls the view while a materializer starts: a missing file, then a
    file without its tables (SQLite creates the file first), mean "not yet", not an error;
    a view of another topic is still an error."""
    path = tmp_path / "v.db"
    with pytest.raises(ViewNotReadyError, match="no view at"):  # an XComViewError for callers
        ViewReader(path)
    bus = XComBus(Settings(view_path=str(path), topic="t"))
    assert ViewPoller(bus._view).offsets() == {}  # no file (decided by the reader itself, not a check
    # of the path before it: the file may appear between the two)
    sqlite3.connect(path).close()  # the file exists, its tables not yet
    assert ViewPoller(bus._view).offsets() == {}
    ViewStore.open(path, topic="other").close()
    bus._reader = None
    with pytest.raises(XComViewError, match="other"):
        ViewPoller(bus._view).offsets()


def test_a_view_left_by_a_killed_writer_is_not_ready_rather_than_broken(tmp_path: Path) -> None:
    """A read-only reader cannot replay a killed writer's log (SQLite says 'attempt to write a
    readonly database', seen in the kill -9 fault scenario): that is a view to wait for, which
    read-your-writes pulls do, not a broken one."""
    with ViewStore.open(tmp_path / "v.db", topic="t"):
        pass
    reader = ViewReader(tmp_path / "v.db")
    try:
        waiting = reader._not_ready(sqlite3.OperationalError("attempt to write a readonly database"))
        assert isinstance(waiting, ViewNotReadyError) and "is one running?" in str(waiting)
        assert reader._not_ready(sqlite3.OperationalError("disk I/O error")) is None
    finally:
        reader.close()

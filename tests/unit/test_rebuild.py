"""verify and swap on view files: SQLite only, no broker (rebuild itself reads the log:
tests/integration/test_audit.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from xcombus import MsgspecXCom, XComViewError, XComViewLockedError
from xcombus.fold import fold
from xcombus.rebuild import swap, verify
from xcombus.store import ViewStore
from xcombus.view import ViewReader

from .batches import push, recs, stored


def _view(path: Path, *values: bytes, topic: str = "t") -> Path:
    with ViewStore.open(path, topic=topic) as store:
        store.write(fold({0: recs(*(push(f"k{i}", v) for i, v in enumerate(values)))}, {}, MsgspecXCom))
    return path


def test_verify_finds_two_equal_views_the_same(tmp_path: Path) -> None:
    a, b = _view(tmp_path / "a.db", b"1", b"2"), _view(tmp_path / "b.db", b"1", b"2")
    result = verify(a, b)
    assert result.same and result.differences == []
    assert (result.rows_a, result.rows_b, result.offsets_a, result.offsets_b) == (2, 2, {0: 2}, {0: 2})


def test_verify_lists_rows_on_either_side_and_offsets(tmp_path: Path) -> None:
    a, b = _view(tmp_path / "a.db", b"1", b"2"), _view(tmp_path / "b.db", b"1", b"3", b"4")
    result = verify(a, b)
    assert not result.same
    assert result.differences[0].startswith("offsets differ: {0: 2} vs {0: 3}")
    assert result.differences[1:] == ["only in A: dag/run/task[-1] 'k1' at 0:1",
                                      "only in B: dag/run/task[-1] 'k1' at 0:1",
                                      "only in B: dag/run/task[-1] 'k2' at 0:2"]
    assert len(verify(a, b, limit=1).differences) == 1


def test_verify_needs_both_files(tmp_path: Path) -> None:
    with pytest.raises(XComViewError, match="no view at"):
        verify(_view(tmp_path / "a.db", b"1"), tmp_path / "absent.db")


def test_swap_replaces_the_live_view_whole(tmp_path: Path) -> None:
    live, new = _view(tmp_path / "live.db", b"1"), _view(tmp_path / "new.db", b"5", b"6", b"7")
    reader = ViewReader(live)  # a reader open across the swap sees the new view after it
    assert reader.count() == 1
    swap(new, live)
    assert reader.count() == 3 and reader.offsets() == {0: 3}
    reader.close()
    assert verify(live, new).same


def test_swap_into_a_new_path_creates_the_view(tmp_path: Path) -> None:
    new = _view(tmp_path / "new.db", b"1")
    swap(new, tmp_path / "live.db")
    assert verify(tmp_path / "live.db", new).same


def test_swap_refuses_a_locked_view_another_topic_and_a_missing_file(tmp_path: Path) -> None:
    live, new = _view(tmp_path / "live.db", b"1"), _view(tmp_path / "new.db", b"2", topic="other")
    with pytest.raises(XComViewError, match="folds topic 'other'"):
        swap(new, live)
    with pytest.raises(XComViewError, match="no view at"):
        swap(tmp_path / "absent.db", live)
    with ViewStore.open(live, topic="t"), pytest.raises(XComViewLockedError):  # a materializer writes it
        swap(_view(tmp_path / "same.db", b"3"), live)
    assert [r.value for r in stored(live)] == [b"1"]  # unchanged by every refusal

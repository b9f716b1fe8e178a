"""The dead-letter retry (xcombus.deadletters) on a real view file: SQLite only, no broker."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import ClassVar

import pytest

from xcombus import MsgspecXCom, Settings, XComRecord, XComViewError, XComViewLockedError
from xcombus.deadletters import retry_dead_letters
from xcombus.fold import fold
from xcombus.store import ViewStore
from xcombus.view import ViewReader

from .batches import clear, push, recs, stored


def _view(path: Path, *values: bytes, topic: str = "t") -> Path:
    with ViewStore.open(path, topic=topic) as store:
        store.write(fold({0: recs(*(push(f"k{i}", v) for i, v in enumerate(values)))}, {}, MsgspecXCom))
    return path


_CUSTOM = "custom/1"


class _Fixed(MsgspecXCom):
    """The backend after the fix: it also reads the codec that was dead-lettered."""

    readable_codecs = frozenset({_CUSTOM})


class _FixedPurging(_Fixed):
    purged: ClassVar[list[bytes]] = []

    @classmethod
    def purge(cls, result: XComRecord) -> None:
        cls.purged.append(result.value)


def _settings(path: Path) -> Settings:
    return Settings.from_env({}, bootstrap_servers="127.0.0.1:1", topic="t", view_path=str(path))


async def test_retry_applies_what_now_decodes_and_counts_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    with ViewStore.open(path, topic="t") as store:
        store.write(fold({0: recs(push("a", b'"1"', codec=_CUSTOM),   # applied by the retry
                                  push("b", b'"2"', codec=_CUSTOM),   # older than the stored b
                                  push("b", b'"3"'),
                                  push("c", b'"4"', codec="nobody/1"))}, {}, MsgspecXCom))
    summary = await retry_dead_letters(_settings(path), backend=_Fixed)
    assert (summary.applied, summary.superseded, summary.still_failing) == (1, 1, 1)
    reader = ViewReader(path)
    assert {r.key: r.value for r in stored(path)} == {"a": b'"1"', "b": b'"3"'}
    [dead] = reader.dead_letters()
    reader.close()
    assert dead.offset == 3 and "_Fixed" in dead.reason


async def test_retry_purges_only_payloads_nothing_refers_to(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    with ViewStore.open(path, topic="t") as store:
        store.write(fold({0: recs(push("a", b'"new"', codec=_CUSTOM),     # decided by the clear
                                  push("b", b'"lost"', codec=_CUSTOM),    # decided by the clear
                                  clear(),
                                  push("c", b'"same"'),
                                  push("c", b'"same"', codec=_CUSTOM),    # a duplicate reference
                                  push("d", b'"old"'),
                                  push("d", b'"newer"', codec=_CUSTOM))},  # replaces "old"
                         {}, MsgspecXCom))
    _FixedPurging.purged = []
    summary = await retry_dead_letters(_settings(path), backend=_FixedPurging)
    assert (summary.applied, summary.superseded, summary.still_failing) == (2, 2, 0)
    # "same" is still referenced by the row that stays.
    assert sorted(_FixedPurging.purged) == [b'"lost"', b'"new"', b'"old"']
    assert {r.key: r.value for r in stored(path)} == {"c": b'"same"', "d": b'"newer"'}


async def test_retry_needs_the_write_lock(tmp_path: Path) -> None:
    path = _view(tmp_path / "v.db", b"1")
    with ViewStore.open(path, topic="t"), pytest.raises(XComViewLockedError):
        await retry_dead_letters(_settings(path), backend=_Fixed)


async def test_retry_of_a_view_of_another_topic_is_refused(tmp_path: Path) -> None:
    path = _view(tmp_path / "v.db", b"1", topic="other")
    with pytest.raises(XComViewError, match="view of topic 'other'"):
        await retry_dead_letters(_settings(path), backend=_Fixed)
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM xcom").fetchone() == (1,)
    db.close()

"""Scenario 9: the view's disk fills up, or turns read-only. The materializer stops with a
clear error and does not advance its offsets; after the fix it resumes and loses nothing.

A real filesystem is used: a small tmpfs mounted for the test (CI runs as root)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import start_materializer, stop_process
from xcombus import Settings, XComBus
from xcombus.rebuild import rebuild, verify
from xcombus.view import ViewReader


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def remount(mount: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(mount)], check=True)


def offsets_of(path: str) -> dict[int, int]:
    reader = ViewReader(path)
    try:
        return reader.offsets()
    finally:
        reader.close()


async def test_full_then_read_only_disk_stops_the_materializer_and_loses_nothing(
        settings: Settings, small_disk: Path, tmp_path: Path) -> None:
    s = settings.replace(view_path=str(small_disk / "view.db"), partitions=1)
    async with XComBus(s) as bus:
        await bus.task_instance("d", "r", "t").xcom_push("small", 1)
        mat = start_materializer(s)
        await bus.wait_visible([0])
        before = offsets_of(s.view_path)
        for i in range(6):  # 6 x 500 kB: more than the 2 MB disk holds
            await bus.task_instance("d", "r", f"big{i}").xcom_push("blob", "x" * 500_000)
        code = mat.wait(60)
    out = mat.communicate()[0]
    assert code == 1, out
    assert "disk is full" in out and "offsets did not advance" in out
    stuck = offsets_of(s.view_path)
    assert before[0] <= stuck[0] < 7  # it stopped before the end...
    # ...with rows and offsets still in agreement: the failed batch left no trace.
    partial = await rebuild(s, tmp_path / "partial.db", until_offsets=stuck)
    assert verify(s.view_path, partial.path).same
    # Read-only now (e.g. a remount after disk errors): it refuses to start.
    remount(small_disk, "ro")
    mat = start_materializer(s)
    assert mat.wait(60) != 0
    assert "readonly" in mat.communicate()[0].lower().replace("-", "").replace(" ", "")
    # The fix: space and write access again. It resumes where the view stopped.
    remount(small_disk, "rw,size=50m")
    mat = start_materializer(s)
    try:
        async with XComBus(s) as bus:
            await bus.wait_visible([0])
    finally:
        assert stop_process(mat)[0] == 0
    rebuilt = await rebuild(s, tmp_path / "rebuilt.db")
    assert verify(s.view_path, rebuilt.path).same
    assert rebuilt.rows == 7 and os.path.getsize(s.view_path) > 3_000_000

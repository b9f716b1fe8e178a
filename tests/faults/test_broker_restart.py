"""Scenario 2: stop and start the broker during pushes and during materialization.

Every push whose xcom_push returned must be in the view afterwards; pushes in flight
either succeed or raise one of our errors; the materializer (its own process) resumes
without help."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import msgspec

from tests.faults.workload import SOAK, Acked, lost_and_stale, push_until
from tests.helpers import make_settings, start_materializer, stop_process, wait_visible_or_dump
from xcombus import XComBus
from xcombus.broker import LocalBroker
from xcombus.view import ViewReader

RESTARTS = 5 if SOAK else 1


async def test_acknowledged_pushes_survive_broker_restarts(own_broker: Callable[..., LocalBroker],
                                                            tmp_path: Path) -> None:
    broker = own_broker()
    settings = make_settings(broker.bootstrap_servers, tmp_path, topic_prefix="restart", connect_timeout=5,
                             push_timeout=8, pull_timeout=90)
    acked: list[Acked] = []
    failed: list[tuple[str, str]] = []   # error type, value
    stop_pushing = asyncio.Event()
    async with XComBus(settings) as bus:
        mat = start_materializer(settings)
        try:
            workers = [asyncio.create_task(push_until(bus, stop_pushing, w, acked, failed)) for w in range(20)]
            for _ in range(RESTARTS):
                await asyncio.sleep(2)
                before = len(acked)
                await asyncio.to_thread(broker.stop)
                await asyncio.sleep(2)
                await asyncio.to_thread(broker.start)
                await asyncio.sleep(1)
                assert before > 0
            deadline = time.monotonic() + 60  # pushes go through again after the restart
            mark = len(acked)
            while len(acked) < mark + 200 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            stop_pushing.set()
            await asyncio.gather(*workers)
            failures = Counter(e for e, _ in failed)
            assert len(acked) >= mark + 200, f"pushes did not recover: {failures}"
            await wait_visible_or_dump(bus, mat, range(settings.partitions))
            assert mat.poll() is None, "the materializer died: " + (mat.communicate()[0] or "")
        finally:
            _, out = stop_process(mat)
    assert mat.returncode == 0, out
    reader = ViewReader(settings.view_path)
    rows = {r.key: (r.partition, r.offset, msgspec.json.decode(r.value)) for r in reader.entries(limit=10_000)}
    reader.close()
    lost, stale = lost_and_stale(acked, rows)
    print(f"restarts={RESTARTS} acknowledged={len(acked)} failed={dict(Counter(e for e, _ in failed))} "
          f"lost={len(lost)} stale={len(stale)}")
    assert not lost and not stale
    # A failed push that still reached the log is fine, but every row holds a pushed value.
    assert all(isinstance(v, str) and ":" in v for _, _, v in rows.values())

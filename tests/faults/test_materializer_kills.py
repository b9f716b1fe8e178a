"""Scenario 1: kill -9 the materializer at random instants under load from several
producer processes; the view must equal the acknowledged pushes, applied exactly once."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import msgspec

from tests.faults.workload import SOAK, oracle
from tests.helpers import settings_env, start_materializer, stop_process
from xcombus import Settings, XComBus
from xcombus.consistency import EndOffsets
from xcombus.view import ViewReader

PRODUCERS = 4
PUSHES = 50_000 if SOAK else 6_000      # per producer: 200k in all for the soak form
KILLS = 25 if SOAK else 6


async def test_view_survives_repeated_kill_9(settings: Settings, tmp_path: Path) -> None:
    async with XComBus(settings):  # create the topic before the producers race to
        pass
    env = settings_env(settings)
    outs = [tmp_path / f"acks{i}.jsonl" for i in range(PRODUCERS)]
    producers = [subprocess.Popen([sys.executable, "-m", "tests.faults.workload", str(out), "--pushes",
                                   str(PUSHES), "--seed", str(i)], env=env) for i, out in enumerate(outs)]
    rng = random.Random(7)
    kills = 0
    mat = start_materializer(settings)
    try:
        while kills < KILLS:
            time.sleep(rng.uniform(0.3, 1.5))
            mat.kill()  # SIGKILL: no cleanup, no last commit
            mat.wait(30)
            kills += 1
            mat = start_materializer(settings)
        for p in producers:
            assert p.wait(600) == 0
        async with XComBus(settings) as bus:
            await bus.wait_visible(range(settings.partitions), timeout=120)
    finally:
        stop_process(mat)
        for p in producers:
            p.kill()
    expected, acknowledged = oracle(outs)
    ends = EndOffsets(settings)
    try:
        end = await ends.get(range(settings.partitions), 10)
    finally:
        await ends.aclose()
    reader = ViewReader(settings.view_path)
    try:
        rows = {(r.dag_id, r.run_id, r.task_id, r.map_index, r.key): msgspec.json.decode(r.value)
                for r in reader.entries(limit=10_000)}
        applied = reader.applied_events()
        dead = reader.dead_letters()
    finally:
        reader.close()
    lost = sum(1 for k in expected if k not in rows)
    stale = sum(1 for k, v in expected.items() if k in rows and rows[k] != v)
    extra = sum(1 for k in rows if k not in expected)
    print(f"kills={kills} acknowledged={acknowledged} log={sum(end.values())} rows={len(rows)} "
          f"lost={lost} stale={stale} extra={extra} applied={sum(applied.values())}")
    assert kills == KILLS and not dead
    assert (lost, stale, extra) == (0, 0, 0)
    # Applied exactly once: the view's counters equal the log, partition by partition.
    assert applied == {p: o for p, o in end.items() if o}
    assert acknowledged == sum(end.values())  # every push was acknowledged (no broker fault here)

"""Scenario 5: reader processes pulling (read-your-writes) while the materializer applies
large batches: no "database is locked", no torn or stale reads, bounded latency."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from tests.faults.readers import KEYS, TASKS
from tests.faults.workload import SOAK
from tests.helpers import settings_env, start_materializer, stop_process
from xcombus import Settings, XComBus

READERS = 4
SECONDS = 60 if SOAK else 10


async def test_many_readers_while_the_view_is_written(settings: Settings, tmp_path: Path) -> None:
    async with XComBus(settings) as bus:
        mat = start_materializer(settings)
        outs = [tmp_path / f"reader{i}.json" for i in range(READERS)]
        readers = [subprocess.Popen([sys.executable, "-m", "tests.faults.readers", str(o), "--seconds",
                                     str(SECONDS), "--seed", str(i)], env=settings_env(settings))
                   for i, o in enumerate(outs)]
        pushed = 0
        try:
            while any(r.poll() is None for r in readers):  # write in bursts: large batches
                await asyncio.gather(*(bus.task_instance("load", "r", f"t{j % TASKS}", -1)
                                       .xcom_push(f"k{(j // TASKS) % KEYS}", pushed + j)
                                       for j in range(1000)))
                pushed += 1000
                await asyncio.sleep(0.05)
            codes = [r.wait(60) for r in readers]
        finally:
            stop_process(mat)
    assert codes == [0] * READERS
    results = [json.loads(o.read_text()) for o in outs]
    print(f"pushed={pushed} " + " ".join(f"reads={r['reads']} p50={r['p50_ms']:.2f}ms p99={r['p99_ms']:.2f}ms"
                                         for r in results))
    for r in results:
        assert r["error_count"] == 0, r["errors"]       # never "database is locked", never a timeout
        assert r["regressions"] == 0                     # never an older value after a newer one
        assert r["reads"] > 50
        assert r["p99_ms"] < settings.pull_timeout * 1000  # bounded: well inside the pull bound

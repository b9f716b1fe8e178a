"""What the version index costs the backlog figures: interleaved pairs of two checkouts.

    python -m benchmarks.experiments.index_cost pairs --before ../main-checkout [--after .]
        [--events 1000000] [--versions 1] [--pairs 3] [--bootstrap 127.0.0.1:29092]

writes one backlog (``bench_backlog.produce``; ``--versions K``: every XCom pushed K times,
what the index stores) to an external broker (``XCOMBUS_BOOTSTRAP_SERVERS`` or
``--bootstrap``), then runs ``measure`` alternately in the *before* and the *after* checkout
(each with its own ``.venv``, so each drains with its own materializer and rebuilds with its
own code): a drain (``bench_backlog.drain``: rate, CPU per event of the materializer and of
its writer child), the view file's size by table (``dbstat``) and a rebuild. Prints every
run as a JSON line and, per figure, the paired ratios after/before, their median and range.
A shared 2-core VM drifts by tens of per cent within minutes: pairs, not two runs apart.

``measure`` is the half each checkout runs (``--topic``, ``--events``, ``--rows``); it needs
this file and the ``rows`` argument of ``bench_backlog.drain`` in that checkout, so copy
both into a checkout older than them. benchmarks/analysis.md cites the results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import bench_backlog
from benchmarks.common import Bench, machine_gauge
from xcombus import Settings

#: Tables that exist for the version index (none of them in a view before schema 3).
INDEX_TABLES = ("xcom_version", "name", "ti_try")


def view_size(path: Path, events: int) -> dict[str, float]:
    """Bytes per event of the whole view file and of the index's tables (their pages, from
    SQLite's ``dbstat``, so the WAL's state does not matter), and the index's rows."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        pages = dict(db.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall())
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        indexed = (db.execute("SELECT count(*) FROM xcom_version").fetchone()[0]
                   if "xcom_version" in tables else 0)
    index = sum(size for name, size in pages.items() if name in INDEX_TABLES)
    return {"view_bytes_per_event": sum(pages.values()) / events, "index_bytes_per_event": index / events,
            "index_rows": float(indexed), "index_bytes_per_row": index / indexed if indexed else 0.0}


def measure(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="xcombus-index-cost-"))
    bench = Bench(args.bootstrap, workdir)
    backlog = Settings.from_env({}, bootstrap_servers=args.bootstrap, topic=args.topic,
                                view_path=str(workdir / "unused.db"))
    out: dict[str, Any] = {"gauge_ms": machine_gauge()}
    try:
        values, _, view = bench_backlog.drain(bench, backlog, args.events, rows=args.rows)
        out.update(values)
        out.update(view_size(view, args.events))
        for p in view.parent.glob(view.name + "*"):
            p.unlink(missing_ok=True)
        out.update(asyncio.run(bench_backlog.bench_rebuild(bench, backlog, args.events, rows=args.rows)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(out))


def _run(checkout: Path, topic: str, events: int, rows: int, bootstrap: str) -> dict[str, Any]:
    python = checkout / ".venv" / "bin" / "python"
    done = subprocess.run([str(python), "-m", "benchmarks.experiments.index_cost", "measure",
                           "--topic", topic, "--events", str(events), "--rows", str(rows),
                           "--bootstrap", bootstrap],
                          cwd=checkout, check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


FIGURES = ("drain_rate", "drain_cpu_us_materializer", "drain_cpu_us_writer", "rebuild_s",
           "view_bytes_per_event", "index_bytes_per_event")


def pairs(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="xcombus-index-cost-"))
    bench = Bench(args.bootstrap, workdir)
    backlog, rate = asyncio.run(bench_backlog.produce(bench, args.events, versions=args.versions))
    shutil.rmtree(workdir, ignore_errors=True)
    rows = args.events // args.versions
    print(json.dumps({"topic": backlog.topic, "events": args.events, "versions": args.versions,
                      "produce_rate": rate}), flush=True)
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    for n in range(args.pairs):
        order = ("before", "after") if n % 2 == 0 else ("after", "before")  # neither side always first
        for side in order:
            result = _run(getattr(args, side).resolve(), backlog.topic, args.events, rows, args.bootstrap)
            runs[side].append(result)
            print(json.dumps({"pair": n + 1, "side": side, **result}), flush=True)
    for fid in FIGURES:
        ratios = [a[fid] / b[fid] for a, b in zip(runs["after"], runs["before"], strict=True) if b[fid]]
        if ratios:
            print(f"{fid}: after/before median {statistics.median(ratios):.3f} "
                  f"(range {min(ratios):.3f}..{max(ratios):.3f}, {len(ratios)} pairs); before median "
                  f"{statistics.median(r[fid] for r in runs['before']):.4g}, after median "
                  f"{statistics.median(r[fid] for r in runs['after']):.4g}")
        else:
            print(f"{fid}: after median {statistics.median(r[fid] for r in runs['after']):.4g} (before: 0)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    default = os.environ.get("XCOMBUS_BOOTSTRAP_SERVERS", "127.0.0.1:29092")
    p = sub.add_parser("pairs", help="write a backlog, then measure the two checkouts alternately")
    p.add_argument("--before", type=Path, required=True, help="checkout without the change (has a .venv)")
    p.add_argument("--after", type=Path, default=Path.cwd(), help="checkout with it (default: here)")
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--versions", type=int, default=1, help="pushes per XCom (default 1: the suite's backlog)")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--bootstrap", default=default)
    m = sub.add_parser("measure", help="one drain, the view's size and one rebuild of an existing backlog")
    m.add_argument("--topic", required=True)
    m.add_argument("--events", type=int, required=True)
    m.add_argument("--rows", type=int, required=True)
    m.add_argument("--bootstrap", default=default)
    args = parser.parse_args()
    pairs(args) if args.command == "pairs" else measure(args)
    sys.stdout.flush()


if __name__ == "__main__":
    main()

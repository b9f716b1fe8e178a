"""An experiment behind docs/benchmarks.md: what one upserted row costs SQLite alone, and
what the view's indexes and settings add. Not part of the timed suite; no broker needed.

    python benchmarks/experiment_sqlite.py [--rows 400000] [VARIANT ...]

Rows look like the benchmark backlog's (1,000-row runs of 4 keys x 250 map indexes x 10
tasks per DAG run, 22-byte values), in 20,000-row transactions as the materializer writes
them: each window of 20,000 events in push order, grouped by partition as a fetch returns
them. Prints the CPU time (``time.process_time``, steadier than wall time on a shared
machine) and the wall time per row of each variant, each into a fresh WAL file with
``synchronous=NORMAL``:

- ``schema1``: the view as schema 1 had it (an index on ``xcom`` for the logical date);
- ``current``: the view's schema (``xcombus.view``), rows sorted by primary key as the
  writer child sends them;
- ``no-indexes``: the current schema without its secondary index (the floor);
- ``cache16``: ``current`` with a 16 MiB page cache; ``page8k``: with 8 KiB pages;
- ``null-date``: rows with no logical date (NULL), as the suite's backlog pushes, bound the
  way the view did before 2026-11-25 (the date as None, the value as bytes, a plain ``?``);
  ``no-adapt``: the same rows as the writer child binds them now, so that ``sqlite3`` skips
  its per-parameter adaptation lookup (it runs it for anything but an exact int, float, str
  or bytearray): the value as a bytearray, the missing date as ``''`` turned into NULL by
  the view's ``NULLIF(?, '')``.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from xcombus.view import _SCHEMA, _UPSERT

#: The upsert as it was before the view bound a missing date as '' (``null-date``'s baseline).
_UPSERT_PLAIN = _UPSERT.replace("NULLIF(?, '')", "?")
assert _UPSERT_PLAIN != _UPSERT

BATCH = 20_000
PARTITIONS = 6
_LOGICAL_DATE_INDEX = ("CREATE INDEX IF NOT EXISTS xcom_by_logical_date "
                       "ON xcom (dag_id, task_id, key, logical_date);")
_TIMESTAMP_INDEX = "CREATE INDEX IF NOT EXISTS xcom_by_timestamp ON xcom (timestamp);"


def backlog_rows(n: int) -> list[tuple[Any, ...]]:
    rows = []
    for i in range(n):
        ti, k = divmod(i, 4)
        run, rest = divmod(ti, 2_500)
        task, map_index = divmod(rest, 250)
        rows.append(("backlog_dag", f"backlog__{run:05d}", f"task_{task}", map_index, f"key{k}",
                     b'"s3://bucket/k%08d"' % i, "json", 1_764_000_000_000_000 + i,
                     1_764_000_000_000_000 + run, "host:1234:abcdef", 1, ti % PARTITIONS, i))
    out: list[tuple[Any, ...]] = []
    for start in range(0, n, BATCH):  # as fetched: by partition within each window
        out.extend(sorted(rows[start:start + BATCH], key=lambda r: r[11]))
    return out


def run(name: str, rows: list[tuple[Any, ...]], workdir: Path, *, schema: str = _SCHEMA,
        pragmas: tuple[str, ...] = (), sort: bool = True, upsert: str = _UPSERT) -> None:
    path = workdir / f"{name}.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    for pragma in pragmas:
        db.execute(pragma)
    db.executescript(schema)
    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, len(rows), BATCH):
        chunk = rows[start:start + BATCH]
        db.execute("BEGIN IMMEDIATE")
        db.executemany(upsert, sorted(chunk) if sort else chunk)
        db.execute("COMMIT")
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    db.close()
    print(f"{name:12s} CPU {cpu / len(rows) * 1e6:5.2f} µs/row   wall {wall / len(rows) * 1e6:5.2f} µs/row",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("variants", nargs="*",
                        default=["schema1", "current", "no-indexes", "cache16", "page8k"])
    args = parser.parse_args()
    rows = backlog_rows(args.rows)
    with tempfile.TemporaryDirectory(prefix="xcombus-sqlite-") as tmp:
        work = Path(tmp)
        for variant in args.variants:
            if variant == "schema1":
                run(variant, rows, work, schema=_SCHEMA + _LOGICAL_DATE_INDEX, sort=False)
            elif variant == "current":
                run(variant, rows, work)
            elif variant == "no-indexes":
                run(variant, rows, work, schema=_SCHEMA.replace(_TIMESTAMP_INDEX, ""))
            elif variant == "cache16":
                run(variant, rows, work, pragmas=("PRAGMA cache_size=-16384",))
            elif variant == "page8k":
                run(variant, rows, work, pragmas=("PRAGMA page_size=8192",))
            elif variant == "null-date":
                run(variant, [(*r[:8], None, *r[9:]) for r in rows], work, upsert=_UPSERT_PLAIN)
            elif variant == "no-adapt":  # what the writer child binds now
                run(variant, [(*r[:5], bytearray(r[5]), *r[6:8], "", *r[9:]) for r in rows], work)
            else:
                parser.error(f"unknown variant {variant!r}")
            for leftover in work.glob("*"):
                os.unlink(leftover)


if __name__ == "__main__":
    main()

"""What one upserted row costs SQLite alone, and what the view's index and settings add.

    python -m benchmarks.experiments.sqlite_upsert [--rows 400000] [VARIANT ...]

No broker needed. Rows look like the benchmark backlog's (4 keys x 250 map indexes x 10
tasks per DAG run, 22-byte values, no logical date), bound as the writer child binds them
(the value as a ``bytearray`` and a missing date as ``''``, so that ``sqlite3`` skips its
per-parameter adaptation lookup), in 20,000-row transactions sorted by primary key as the
writer child sends them. Prints the CPU time (``time.process_time``, steadier than wall
time on a shared machine) and the wall time per row of each variant, each into a fresh WAL
file with ``synchronous=NORMAL``:

- ``current``: the view's schema;
- ``no-indexes``: without its secondary index (the floor of this schema);
- ``cache16``: ``current`` with a 16 MiB page cache; ``page8k``: with 8 KiB pages.

benchmarks/analysis.md cites it (the writer child's SQLite share of a drain).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from xcombus.store import SCHEMA, UPSERT

BATCH = 20_000
PARTITIONS = 6
_TIMESTAMP_INDEX = "CREATE INDEX IF NOT EXISTS xcom_by_timestamp ON xcom (timestamp);"
assert _TIMESTAMP_INDEX in SCHEMA


def backlog_rows(n: int) -> list[tuple[Any, ...]]:
    rows = []
    for i in range(n):
        ti, k = divmod(i, 4)
        run, rest = divmod(ti, 2_500)
        task, map_index = divmod(rest, 250)
        rows.append(("backlog_dag", f"backlog__{run:05d}", f"task_{task}", map_index, f"key{k}",
                     bytearray(b'"s3://bucket/k%08d"' % i), "json", 1_764_000_000_000_000 + i,
                     "", "host:1234:abcdef", 1, ti % PARTITIONS, i))
    out: list[tuple[Any, ...]] = []
    for start in range(0, n, BATCH):  # as fetched: by partition within each window
        out.extend(sorted(rows[start:start + BATCH], key=lambda r: r[11]))
    return out


def run(name: str, rows: list[tuple[Any, ...]], workdir: Path, *, schema: str = SCHEMA,
        pragmas: tuple[str, ...] = ()) -> None:
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
        db.executemany(UPSERT, sorted(chunk))
        db.execute("COMMIT")
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    db.close()
    print(f"{name:12s} CPU {cpu / len(rows) * 1e6:5.2f} µs/row   wall {wall / len(rows) * 1e6:5.2f} µs/row",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("variants", nargs="*",
                        default=["current", "no-indexes", "cache16", "page8k"])
    args = parser.parse_args()
    rows = backlog_rows(args.rows)
    with tempfile.TemporaryDirectory(prefix="xcombus-sqlite-") as tmp:
        work = Path(tmp)
        for variant in args.variants:
            if variant == "current":
                run(variant, rows, work)
            elif variant == "no-indexes":
                run(variant, rows, work, schema=SCHEMA.replace(_TIMESTAMP_INDEX, ""))
            elif variant == "cache16":
                run(variant, rows, work, pragmas=("PRAGMA cache_size=-16384",))
            elif variant == "page8k":
                run(variant, rows, work, pragmas=("PRAGMA page_size=8192",))
            else:
                parser.error(f"unknown variant {variant!r}")
            for leftover in work.glob("*"):
                os.unlink(leftover)


if __name__ == "__main__":
    main()

"""An experiment behind docs/benchmarks.md's recommendations: where a rebuild's time goes,
and what a writer in its own process would gain. Not part of the timed suite.

    python benchmarks/experiment_rebuild.py TOPIC [--variant as-is|thread-pipeline|writer-process]
                                                  [--defer-indexes]

TOPIC is an existing xcombus topic on ``XCOMBUS_BOOTSTRAP_SERVERS`` (default
127.0.0.1:29092), e.g. one written by ``bench_backlog.produce``. Every variant folds the topic
with the library's own ``read_log`` and ``fold`` into a fresh view with the library's schema
and upsert, like ``xcombus.audit.rebuild``; they differ only in where the SQLite writes run:

- ``as-is``: like the library: fold a batch, then await ``ViewWriter.apply`` (aiosqlite's
  thread), then fetch and fold the next; prints the time spent folding and writing;
- ``thread-pipeline``: keep one ``ViewWriter.apply`` in flight while the next batch is
  fetched and folded (two threads, one GIL);
- ``writer-process``: ship each folded batch (MessagePack) to a writer process that runs
  the same transaction with the standard ``sqlite3`` module (two processes, two GILs).

``--defer-indexes`` creates the view's two secondary indexes after the load instead of before.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
from common import end_offsets

from xcombus.audit import read_log
from xcombus.backends import load_backend
from xcombus.materialize import fold
from xcombus.settings import Settings
from xcombus.view import _OFFSET, _SCHEMA, _UPSERT, ViewWriter

_INDEXES = "\n".join(line for line in _SCHEMA.splitlines() if line.startswith("CREATE INDEX"))
_NO_INDEXES = "\n".join(line for line in _SCHEMA.splitlines() if not line.startswith("CREATE INDEX"))


def _writer(path: str, conn: Any, defer: bool) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    db.executescript(_NO_INDEXES if defer else _SCHEMA)
    decode = msgspec.msgpack.Decoder().decode
    busy = 0.0
    while data := conn.recv_bytes():
        started = time.perf_counter()
        upserts, offsets = decode(data)
        db.execute("BEGIN IMMEDIATE")
        db.executemany(_UPSERT, upserts)
        db.executemany(_OFFSET, offsets)
        db.execute("COMMIT")
        busy += time.perf_counter() - started
        conn.send_bytes(b"k")
    if defer:
        db.executescript(_INDEXES)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    rows = db.execute("SELECT count(*) FROM xcom").fetchone()[0]
    conn.send_bytes(msgspec.msgpack.encode([rows, busy]))


async def run(settings: Settings, into: Path, variant: str, defer: bool) -> None:
    backend = load_backend(settings)
    ends = await end_offsets(settings)
    applied: dict[int, int] = {}
    fold_s = write_s = 0.0
    started = time.perf_counter()
    if variant == "writer-process":
        ctx = mp.get_context("spawn")
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=_writer, args=(str(into), theirs, defer))
        proc.start()
        encode = msgspec.msgpack.Encoder().encode
        in_flight = 0
        async for records in read_log(settings, sorted(ends), until=ends):
            t = time.perf_counter()
            by_partition: dict[int, list[Any]] = {}
            for rec in records:
                by_partition.setdefault(rec.partition, []).append(rec)
            batch = fold(by_partition, applied, backend)
            applied.update(batch.offsets)
            data = encode([batch.upserts, [(p, o, batch.events.get(p, 0)) for p, o in batch.offsets.items()]])
            fold_s += time.perf_counter() - t
            if in_flight:
                ours.recv_bytes()  # one batch in flight: bounded memory
            ours.send_bytes(data)
            in_flight = 1
        if in_flight:
            ours.recv_bytes()
        ours.send_bytes(b"")
        rows, write_s = msgspec.msgpack.decode(ours.recv_bytes())
        proc.join()
    else:
        async with ViewWriter(into, topic=settings.topic) as writer:
            await writer.db.execute("PRAGMA synchronous=OFF")
            if defer:
                await writer.db.execute("DROP INDEX IF EXISTS xcom_by_logical_date")
                await writer.db.execute("DROP INDEX xcom_by_timestamp")
            pending: asyncio.Future[Any] | None = None
            async for records in read_log(settings, sorted(ends), until=ends):
                t = time.perf_counter()
                by_partition = {}
                for rec in records:
                    by_partition.setdefault(rec.partition, []).append(rec)
                batch = fold(by_partition, applied, backend)
                applied.update(batch.offsets)
                fold_s += time.perf_counter() - t
                if variant == "thread-pipeline":
                    if pending is not None:
                        await pending
                    pending = asyncio.ensure_future(writer.apply(batch))
                else:
                    t = time.perf_counter()
                    await writer.apply(batch)
                    write_s += time.perf_counter() - t
            if pending is not None:
                await pending
            if defer:
                await writer.db.executescript(_INDEXES)
            await writer.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            rows = (await writer.db.execute_fetchall("SELECT count(*) FROM xcom"))[0][0]
    elapsed = time.perf_counter() - started
    print(f"{variant}{' +deferred indexes' if defer else ''}: {rows:,} rows in {elapsed:.1f}s "
          f"({rows / elapsed:,.0f} events/s); folding {fold_s:.1f}s, writing "
          f"{'(overlapped)' if variant == 'thread-pipeline' else f'{write_s:.1f}s'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("topic")
    parser.add_argument("--variant", choices=["as-is", "thread-pipeline", "writer-process"], default="as-is")
    parser.add_argument("--defer-indexes", action="store_true")
    args = parser.parse_args()
    bootstrap = os.environ.get("XCOMBUS_BOOTSTRAP_SERVERS", "127.0.0.1:29092")
    settings = Settings.from_env({}, bootstrap_servers=bootstrap, topic=args.topic, view_path="unused.db")
    with tempfile.TemporaryDirectory(prefix="xcombus-experiment-") as tmp:
        asyncio.run(run(settings, Path(tmp) / "view.db", args.variant, args.defer_indexes))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

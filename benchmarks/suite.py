"""Run every xcombus benchmark and the SQL baseline; write docs/benchmarks.md and the plots.

    pip install -e '.[bench]'
    python benchmarks/run.py            # the issue's sizes (1,000,000-event backlog), 5 + 3 repeats
    python benchmarks/run.py --quick    # 100,000-event backlog, 1 repeat, results elsewhere
    python benchmarks/run.py --airflow  # only the comparison inside Apache Airflow 3.3 (~20 min;
                                        # with --quick ~5 min): benchmarks/bench_airflow.py

(``python -m benchmarks.suite`` is the same; ``benchmarks/run.py`` only launches this module.)

The broker is ``XCOMBUS_BOOTSTRAP_SERVERS`` when set; otherwise a local broker
(:class:`xcombus.broker.LocalBroker`, port 29092, a temporary home) is started and stopped at
the end. Raw results go to ``benchmarks/results/latest.json``; ``benchmarks/report.py``
renders them into the markdown report and the PNG plots. Every figure id a bench returns
must be registered in ``benchmarks/figures.py`` (checked as results are added).

``--airflow`` runs ``benchmarks/bench_airflow.py`` instead of the suite (the same DAGs under
Airflow 3.3's default XCom backend, the common-io object-storage backend and xcombus; its
own broker on port 39092 unless ``XCOMBUS_BOOTSTRAP_SERVERS`` is set), writes
``benchmarks/results/airflow.json`` and re-renders the report, whose "Inside Apache Airflow
3.3" section comes from that file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

try:
    from benchmarks import (
        baseline_sql,
        bench_backlog,
        bench_history,
        bench_pipeline,
        bench_visible,
        figures,
        history,
        report,
    )
    from benchmarks.common import (
        REPO,
        Bench,
        Samples,
        Values,
        fmt,
        log,
        machine_facts,
        machine_gauge,
        percentile,
        quantiles,
    )
    from xcombus.broker import KAFKA_VERSION, LocalBroker
except ModuleNotFoundError as exc:  # the benchmark extra is not part of the test install
    sys.exit(f"benchmarks/run.py needs {exc.name!r}: install the benchmark extra with "
             "pip install -e '.[bench]' (matplotlib, sqlalchemy, psutil, uvloop)")

LOCAL_PORT = 29092


class Results:
    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}
        self.samples: dict[str, list[float]] = {}

    def add(self, values: Values, samples: Samples | None = None, raw: bool = False) -> None:
        figures.check(values, samples or ())
        for k, v in values.items():
            self.values.setdefault(k, []).append(v)
        for k, s in (samples or {}).items():  # the last repeat's distribution, for plots
            self.samples[k] = _thin(s) if raw else quantiles(s)


def _thin(series: list[float], points: int = 2_000) -> list[float]:
    step = max(1, len(series) // points)
    return series[::step]


def _show(label: str, values: Values, started: float) -> None:
    shown = ", ".join(f"{k} {fmt(v)}" for k, v in values.items())
    log(f"  {label}: {shown} ({time.perf_counter() - started:.1f}s)")


Figure = tuple[Values, Samples]


async def run_all(bench: Bench, args: argparse.Namespace, res: Results, meta: dict[str, Any]) -> None:
    async def fig(label: str, coro: Callable[[], Awaitable[Figure]]) -> None:
        started = time.perf_counter()
        values, samples = await coro()
        res.add(values, samples)
        _show(label, values, started)

    def sync_fig(label: str, fn: Callable[[], Figure]) -> None:
        started = time.perf_counter()
        values, samples = fn()
        res.add(values, samples)
        _show(label, values, started)

    started = time.perf_counter()
    # Warm the broker's JIT, its group coordinator (the first consumer group creates
    # __consumer_offsets) and the client code paths; nothing here is recorded.
    await bench_pipeline.bench_push_throughput(bench, min(args.pushes, 20_000), 1_000)
    warm, _ = await bench_backlog.produce(bench, 20_000)
    bench_backlog.drain(bench, warm, 20_000)
    log(f"warm-up done in {time.perf_counter() - started:.1f}s")

    work = bench.workdir
    for repeat in range(1, args.repeats + 1):
        log(f"repeat {repeat}/{args.repeats}")
        gauge = machine_gauge()
        res.add({"machine_gauge": gauge})
        log(f"  machine gauge: {gauge:.0f} ms")
        for c in figures.PUSH_CONCURRENCY:
            await fig(f"push throughput x{c}",
                      lambda c=c: bench_pipeline.bench_push_throughput(bench, args.pushes, c))
        await fig("push throughput x1000, record values", lambda: bench_pipeline.bench_push_throughput(
            bench, args.pushes, figures.PUSH_CONCURRENCY[0], record=True))
        if bench_pipeline.uvloop_available():
            c = figures.PUSH_CONCURRENCY[0]
            await fig(f"push throughput x{c} on uvloop",
                      lambda c=c: bench_pipeline.bench_push_throughput_uvloop(bench, args.pushes, c))
        await fig("push latency", lambda: bench_pipeline.bench_push_latency(bench))
        await fig("pull eventual", lambda: bench_pipeline.bench_pull_eventual(bench))
        await fig("pull read-your-writes", lambda: bench_pipeline.bench_pull_strong(bench))
        await fig("fan-in", lambda: bench_pipeline.bench_fanin(bench))

        def base_push() -> Figure:
            out = baseline_sql.bench_push(work, args.baseline_pushes)
            meta["baseline_pragmas"] = ", ".join(f"{k}={v}" for k, v in out["pragmas"].items())
            lat = out["latencies"]
            return ({"base_push_tput": out["throughput"], "base_push_p50": percentile(lat, 50) * 1e3,
                     "base_push_p99": percentile(lat, 99) * 1e3}, {"base_push": lat})

        def base_pull() -> Figure:
            lat = baseline_sql.bench_pull(work)
            return ({"base_pull_p50": percentile(lat, 50) * 1e3, "base_pull_p99": percentile(lat, 99) * 1e3},
                    {"base_pull": lat})

        def base_fanin() -> Figure:
            lat = baseline_sql.bench_fanin(work)
            return {"base_fanin_p50": percentile(lat, 50) * 1e3}, {"base_fanin": lat}

        sync_fig("baseline push", base_push)
        sync_fig("baseline pull", base_pull)
        sync_fig("baseline fan-in", base_fanin)
        await fig("push -> visible", lambda: bench_visible.bench_visible(
            bench, args.visible_rate, args.visible_seconds))

    started = time.perf_counter()
    # The backlog carries the tracked XCom of the history figures (13 events among its own).
    backlog, rate = await bench_history.produce_with_tracked(bench, args.backlog)
    on_topic, rows = args.backlog + bench_history.TRACKED_EVENTS, args.backlog + bench_history.TRACKED_ROWS
    res.add({"produce_rate": rate})
    log(f"backlog of {args.backlog:,} events written at {fmt(rate)} pushes/s "
        f"({time.perf_counter() - started:.1f}s)")
    started = time.perf_counter()
    small, small_view = await bench_history.small_topic(bench, meta["history_small"])
    log(f"history: a {meta['history_small']:,}-event topic and its view "
        f"({time.perf_counter() - started:.1f}s)")
    for repeat in range(1, args.big_repeats + 1):
        log(f"backlog repeat {repeat}/{args.big_repeats}")
        started = time.perf_counter()
        values, samples, view = bench_backlog.drain(bench, backlog, on_topic, rows=rows)
        res.add(values)
        res.add({}, samples, raw=True)
        _show("drain + RSS", values, started)
        try:
            await fig("pulls on the big view",
                      lambda view=view: bench_backlog.bench_big_view_pulls(backlog, view, args.backlog))
            await fig("history from the index, and by scanning",
                      lambda view=view: bench_history.bench_history(small, small_view, backlog, view))
            sync_fig("view size", lambda view=view: (bench_history.backlog_index_size(view, on_topic), {}))
        finally:
            for p in view.parent.glob(view.name + "*"):
                p.unlink(missing_ok=True)
        started = time.perf_counter()
        values = await bench_backlog.bench_rebuild(bench, backlog, on_topic, rows=rows)
        res.add(values)
        _show("rebuild", values, started)
    started = time.perf_counter()
    values = await bench_history.bench_index_size(bench, meta["index_backlog"])
    res.add(values)
    _show(f"index size, every XCom pushed {bench_history.VERSIONS} times", values, started)


def _load() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (100,000-event backlog, 20,000 pushes, 1 repeat, 3 s "
                             "of paced pushes); writes to benchmarks/results/quick/")
    parser.add_argument("--repeats", type=int, help="repeats of the cheap figures (default 5)")
    parser.add_argument("--big-repeats", type=int,
                        help="repeats of the backlog figures: drain, RSS, rebuild (default 3)")
    parser.add_argument("--pushes", type=int, help="pushes timed by push throughput (default 100000)")
    parser.add_argument("--backlog", type=int, help="events in the backlog (default 1000000)")
    parser.add_argument("--visible-rate", type=int, default=5_000, help="paced pushes/s (default 5000)")
    parser.add_argument("--visible-seconds", type=float, help="seconds of paced pushes (default 10)")
    parser.add_argument("--baseline-pushes", type=int, help="pushes of the SQL baseline (default 5000)")
    parser.add_argument("--out", type=Path, help="the markdown report (default docs/benchmarks.md)")
    parser.add_argument("--img", type=Path, help="where the PNG plots go (default docs/img)")
    parser.add_argument("--json", type=Path, help="raw results (default benchmarks/results/latest.json)")
    parser.add_argument("--airflow", action="store_true",
                        help="run only the comparison inside Apache Airflow 3.3 "
                             "(benchmarks/bench_airflow.py; --quick passes on) and re-render the report")
    parser.add_argument("--broker-port", type=int, default=LOCAL_PORT,
                        help=f"port of the local broker when one is started (default {LOCAL_PORT})")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {"repeats": 1 if quick else 5, "big_repeats": 1 if quick else 3,
                "pushes": 20_000 if quick else 100_000, "backlog": 100_000 if quick else 1_000_000,
                "visible_seconds": 3.0 if quick else 10.0, "baseline_pushes": 1_000 if quick else 5_000}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    base = REPO / "benchmarks" / "results" / "quick" if quick else None
    args.out = args.out or (base / "benchmarks.md" if base else REPO / "docs" / "benchmarks.md")
    args.img = args.img or (base / "img" if base else REPO / "docs" / "img")
    args.json = args.json or (base / "results.json" if base
                              else REPO / "benchmarks" / "results" / "latest.json")
    if min(args.repeats, args.big_repeats, args.pushes, args.backlog, args.visible_rate,
           args.baseline_pushes) < 1 or args.visible_seconds <= 0:
        parser.error("sizes and repeats must be positive")
    if args.backlog % len(bench_backlog.KEYS):
        parser.error(f"--backlog must be a multiple of {len(bench_backlog.KEYS)}")
    return args


def _code_version() -> str:
    """The commit measured, marked when the working tree had uncommitted changes."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, check=True,
                                capture_output=True, text=True, timeout=20).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               check=True, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return f"{commit} + uncommitted changes" if dirty else commit


def run_airflow(args: argparse.Namespace) -> None:
    """The Airflow comparison alone, then the report re-rendered with it."""
    from benchmarks import bench_airflow

    bench_airflow.main(["--quick"] if args.quick else [])
    if args.json.exists():
        report.render(args.json, args.out, args.img)
        print(f"re-rendered {args.out} with the Airflow section")
    else:
        print(f"{args.json} does not exist yet: run the suite once to render {args.out}")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.airflow:
        run_airflow(args)
        return
    # aiokafka warns while a fresh topic's partitions elect their leader (the first pushes
    # retry); that happens in the untimed pushes and is not worth a screenful per figure.
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    command = shlex.join(["python", "benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)])
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="xcombus-bench-"))
    external = os.environ.get("XCOMBUS_BOOTSTRAP_SERVERS", "").strip()
    broker: LocalBroker | None = None
    res = Results()
    meta: dict[str, Any] = {"command": command, "load_before": _load(), "repeats": args.repeats,
                            "big_repeats": args.big_repeats, "backlog": args.backlog,
                            "visible_rate": args.visible_rate, "visible_seconds": args.visible_seconds,
                            "baseline_pushes": args.baseline_pushes, "pushes": args.pushes,
                            "broker_port": args.broker_port,
                            # the history figures' small topic, the index-size backlog
                            "history_small": max(1, args.backlog // 10),
                            "index_backlog": max(1, args.backlog // 10 // bench_history.VERSIONS)
                            * bench_history.VERSIONS,
                            "code": _code_version()}  # at the start: the code that gets measured
    try:
        if external:
            bootstrap = external
        else:
            broker = LocalBroker(home=workdir / "broker", port=args.broker_port)
            log(f"starting a local Kafka {KAFKA_VERSION} broker on port {broker.port} ...")
            broker.start()
            bootstrap = broker.bootstrap_servers
        log(f"broker ready at {bootstrap} ({time.perf_counter() - started:.1f}s)")
        bench = Bench(bootstrap, workdir)
        try:
            asyncio.run(run_all(bench, args, res, meta))
        finally:
            if external:
                asyncio.run(bench.delete_topics())
        meta["machine"] = machine_facts(bootstrap, bool(external))
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    meta.update(date=f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC", load_after=_load(),
                minutes=(time.perf_counter() - started) / 60)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "values": res.values, "samples": res.samples}, indent=1))
    with history.history_path(args.json).open("a") as runs:  # one line per run, kept
        runs.write(json.dumps(history.history_entry(meta, res.values)) + "\n")
    report.render(args.json, args.out, args.img)
    print()
    for fid, label, unit, op, target in figures.TARGETS:
        if fid in res.values:
            m = figures.median(res.values[fid])
            ok = figures.met(op, m, target)
            print(f"{'met ' if ok else 'MISS'}  {figures.fill_label(label, meta)}: {fmt(m)} {unit} "
                  f"(target {op} {fmt(target)})")
    print(f"\nwrote {args.out}, {args.img}/*.png and {args.json} "
          f"({(time.perf_counter() - started) / 60:.1f} min in total)")


if __name__ == "__main__":
    main()
